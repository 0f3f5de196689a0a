"""Tokenizers: hub/local loading, and small BPE tokenizers trained offline for the tiny twins.

A tiny model needs a tokenizer that matches its task's text. We train a byte-level BPE with
the ``tokenizers`` library on the task's training text (seconds) and cache it on disk keyed by
a hash of that text and the settings, so every run on the same data gets the same ids.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Iterable

from filelock import FileLock
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

log = logging.getLogger(__name__)

SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]


def load_tokenizer(
    name_or_path: str,
    revision: str | None = None,
    trust_remote_code: bool = False,
    **kwargs,
) -> PreTrainedTokenizerBase:
    """Load a hub or local tokenizer; give it a pad token if it has none (GPT-2)."""
    tok = AutoTokenizer.from_pretrained(
        name_or_path, revision=revision, trust_remote_code=trust_remote_code, **kwargs
    )
    if tok.pad_token is None:
        # GPT-2 has no pad token; padding positions are masked out, so EOS is a safe stand-in.
        tok.pad_token = tok.eos_token
    return tok


def train_bpe_tokenizer(
    texts: Iterable[str],
    family: str,
    vocab_size: int,
    cache_dir: Path,
    model_max_length: int = 512,
) -> PreTrainedTokenizerFast:
    """Train (or load from cache) a byte-level BPE tokenizer for a tiny model of ``family``.

    Encoders and encoder-decoders get ``<s> … </s>`` around each sequence (as XLM-R and BART
    do); decoders get no added tokens (as GPT-2). Spaces are prefixed to every word so that
    pre-split words (NER) and running text tokenize the same way.

    Args:
        texts: training text (one string per sentence/document).
        family: ``encoder``, ``decoder`` or ``encoder_decoder``.
        vocab_size: target vocabulary size (including special tokens).
        cache_dir: where tokenizers are cached, one subdirectory per hash.
        model_max_length: maximum sequence length recorded in the tokenizer.
    """
    texts = [t for t in texts if t.strip()]
    digest = hashlib.sha256()
    for part in (family, str(vocab_size), str(model_max_length), *texts):
        digest.update(part.encode("utf-8"))
        digest.update(b"\0")
    out_dir = Path(cache_dir) / f"bpe-{family}-{digest.hexdigest()[:16]}"
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out_dir) + ".lock"):
        if (out_dir / "tokenizer.json").exists():
            log.info("Tokenizer reused from cache: %s", out_dir)
            return PreTrainedTokenizerFast.from_pretrained(out_dir)
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=SPECIAL_TOKENS,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tok.train_from_iterator(texts, trainer=trainer)
        if family in ("encoder", "encoder_decoder"):
            tok.post_processor = processors.TemplateProcessing(
                single="<s> $A </s>",
                pair="<s> $A </s> </s> $B </s>",
                special_tokens=[("<s>", tok.token_to_id("<s>")), ("</s>", tok.token_to_id("</s>"))],
            )
        else:
            tok.post_processor = processors.ByteLevel(trim_offsets=False)
        fast = PreTrainedTokenizerFast(
            tokenizer_object=tok,
            bos_token="<s>",
            eos_token="</s>",
            pad_token="<pad>",
            unk_token="<unk>",
            mask_token="<mask>",
            model_max_length=model_max_length,
        )
        tmp = out_dir.with_name(out_dir.name + ".tmp")
        fast.save_pretrained(tmp)
        tmp.rename(out_dir)
        log.info("Tokenizer trained (vocab %d) and cached: %s", len(fast), out_dir)
        return PreTrainedTokenizerFast.from_pretrained(out_dir)
