"""Causal language modelling: WikiText-2/103, PTB, any raw text, the smoke task.

Training: documents are tokenized, joined with EOS and cut into blocks of ``max_length``.

Evaluation protocol (perplexity), ``ppl_protocol``, recorded in the row as ``quality.ppl_protocol``:

* ``per_document`` (default): every document is scored on its own, prefixed by the EOS token
  as a start-of-document context so that its first token is predicted too;
* ``joined_stream``: the protocol of the transformers perplexity guide and of most GPT-2
  papers' tables (Radford et al. 2019; Tao et al. 2022's WikiText/PTB numbers are compared with
  such): the split's documents joined by ``"\n\n"`` (the guide's join) into one token stream,
  whose first token is not scored.

Either way a sequence longer than the context is scored with a sliding window of
``max_length`` tokens moved by ``stride`` tokens (the guide uses 1024/512 for GPT-2); each token
is scored exactly once, with at least ``max_length - stride`` tokens of context when available.
Perplexity is ``exp(total NLL / total scored tokens)`` over the split (the exact token mean; the
guide's averaging of window means differs from it slightly); ``quality.token_accuracy`` is top-1
next-token accuracy over the same tokens. The mean NLL of every document (or of the one stream)
is saved.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from transformers import AutoModelForCausalLM

from compbench.devices import model_device
from compbench.errors import ConfigError
from compbench.tasks import synthetic
from compbench.tasks.base import LogitsCallback, Task
from compbench.tasks.readers import split_documents

PPL_PROTOCOLS = ("per_document", "joined_stream")


def sliding_windows(n_tokens: int, max_length: int, stride: int) -> list[tuple[int, int, int]]:
    """Windows ``(begin, end, first_scored)`` over a sequence of ``n_tokens`` (incl. the prefix).

    Position ``j`` is scored when ``first_scored <= j < end`` (predicted from ``j - 1``); every
    position ``1..n_tokens-1`` is scored exactly once, each with at least ``max_length - stride``
    tokens of context once the first window is full.
    """
    if not 1 <= stride < max_length:
        raise ConfigError(f"task.stride must be in [1, task.max_length={max_length}), got {stride}.")
    windows, prev_end = [], 1
    for begin in range(0, max(n_tokens - 1, 0), stride):
        end = min(begin + max_length, n_tokens)
        windows.append((begin, end, prev_end))
        prev_end = end
        if end == n_tokens:
            break
    return windows


@dataclass
class CausalLMTask(Task):
    """Causal LM on raw text files, a hub dataset with a ``text`` column, or the smoke data."""

    stride: int = 64
    doc_split: str = "wikitext"
    text_column: str = "text"
    ppl_protocol: str = "per_document"

    kind: ClassVar[str] = "causal_lm"
    main_metric: ClassVar[str] = "quality.ppl"
    #: Robustness drops in nats of mean token NLL (= ln of the perplexity ratio): bounded by the
    #: log scale, where the relative change of perplexity explodes (1.8e4 on a 2-bit tiny GPT-2).
    robust_drop: ClassVar[tuple[str, str] | None] = ("quality.nll", "difference")
    supported_families: ClassVar[tuple[str, ...]] = ("decoder",)
    local_suffixes: ClassVar[tuple[str, ...]] = (".txt", ".raw", ".tokens")

    def __post_init__(self) -> None:
        super().__post_init__()
        sliding_windows(2, self.max_length, self.stride)  # validates stride against max_length
        if self.ppl_protocol not in PPL_PROTOCOLS:
            raise ConfigError(f"task.ppl_protocol={self.ppl_protocol!r} is unknown; choose one of: "
                              f"{', '.join(PPL_PROTOCOLS)}.")

    def read_local(self, path: Path) -> list[str]:
        return split_documents(Path(path).read_text(encoding="utf-8"), self.doc_split)

    def _load_hub(self) -> dict[str, list[Any]]:
        # Hub LM datasets (wikitext) hold one line per row: re-join them and split into documents
        # with the same policy as local files, so hub and local runs score identical documents.
        from compbench.tasks.base import hub_split_digest

        ds = self._hub_dataset()
        splits = {}
        for split, cand in (("train", "train"), ("validation", "validation"), ("test", "test")):
            if cand in ds:
                text = "\n".join(ds[cand][self.text_column])
                splits[split] = split_documents(text, self.doc_split)
                self.provenance[split] = f"hub {self.hub_dataset}/{self.hub_config or ''}:{cand}"
                self.split_digests[split] = hub_split_digest(ds[cand])
        self._derive_missing(splits)
        return splits

    def read_hub_row(self, row: dict[str, Any]) -> str:
        return row[self.text_column]

    def read_synthetic(self, split: str, n: int) -> list[str]:
        return synthetic.lm_documents(n, seed={"train": 10, "validation": 11, "test": 12}[split])

    def training_texts(self) -> list[str]:
        return self.load()["train"]

    def auto_model_class(self):
        return AutoModelForCausalLM

    def encode_split(self, split: str):
        """Token ids per document; the train split becomes blocks of ``max_length`` tokens."""
        eos = self.tokenizer.eos_token_id
        if eos is None:
            raise ConfigError("the tokenizer has no EOS token, which causal LM evaluation needs as document start.")
        if split != "train" and self.ppl_protocol == "joined_stream":
            # One "document": the whole split as one stream, tokenized as one text (the guide's).
            return [self.tokenizer("\n\n".join(self.splits[split]), add_special_tokens=False)["input_ids"]]
        ids = [self.tokenizer(doc, add_special_tokens=False)["input_ids"] for doc in self.splits[split]]
        if split != "train":
            return ids
        stream: list[int] = []
        for doc in ids:
            stream += doc + [eos]
        n_blocks = len(stream) // self.max_length
        if n_blocks == 0:
            raise ConfigError(f"the train split has fewer than task.max_length={self.max_length} tokens.")
        return torch.tensor(stream[: n_blocks * self.max_length]).view(n_blocks, self.max_length)

    def perturb_example(self, example, perturbation, rng):
        return perturbation.apply_text(example, rng)

    def dataloader(self, split: str, shuffle: bool = False) -> DataLoader:
        if split == "train":
            def collate(rows):
                ids = torch.stack(rows)
                return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}

            return DataLoader(list(self.features["train"]), batch_size=self.batch_size, shuffle=shuffle, collate_fn=collate)
        return DataLoader(self._eval_windows(split), batch_size=self.eval_batch_size, collate_fn=self._collate_windows)

    def _eval_windows(self, split: str) -> list[dict[str, Any]]:
        rows = []
        eos = self.tokenizer.eos_token_id
        for doc_index, ids in enumerate(self.features[split]):
            seq = list(ids) if self.ppl_protocol == "joined_stream" else [eos] + ids
            for begin, end, first in sliding_windows(len(seq), self.max_length, self.stride):
                labels = list(seq[begin:end])
                for j in range(begin, first):
                    labels[j - begin] = -100
                rows.append({"input_ids": seq[begin:end], "labels": labels, "doc": doc_index})
        return rows

    def _collate_windows(self, rows):
        width = max(len(r["input_ids"]) for r in rows)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = torch.full((len(rows), width), pad)
        labels = torch.full((len(rows), width), -100)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            n = len(r["input_ids"])
            ids[i, :n] = torch.tensor(r["input_ids"])
            labels[i, :n] = torch.tensor(r["labels"])
            mask[i, :n] = 1
        return {"input_ids": ids, "attention_mask": mask, "labels": labels,
                "doc": torch.tensor([r["doc"] for r in rows])}

    @torch.no_grad()
    def evaluate(self, model, out_dir: Path | None, split: str = "test", on_logits: LogitsCallback | None = None) -> dict[str, float]:
        limit = getattr(getattr(model, "config", None), "n_positions", None) or getattr(
            getattr(model, "config", None), "max_position_embeddings", None)
        if limit is not None and self.max_length > limit:
            raise ConfigError(f"task.max_length={self.max_length} exceeds the model's context of {limit} tokens.")
        device = model_device(model)
        model.eval()
        n_docs = len(self.features[split])
        doc_nll = [0.0] * n_docs
        doc_tokens = [0] * n_docs
        correct = 0
        for batch in self.dataloader(split):
            docs = batch.pop("doc")
            labels = batch.pop("labels").to(device)
            full = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)).logits.float()
            _, width, vocab = full.shape
            targets = labels[:, 1:]
            scored = targets != -100
            # One log-softmax per batch, of the scored positions only, shared by the NLL, the
            # accuracy and the calibration callback (which reuses it instead of recomputing it):
            # the eval_overhead profile found three full [tokens, vocab] softmaxes and several
            # ~100 MB copies per batch at GPT-2's vocabulary. Values are those of
            # F.cross_entropy / argmax on the whole batch (row-wise ops; tests/tasks/test_lm.py).
            rows_b, rows_t = scored.nonzero(as_tuple=True)
            tokens = full.reshape(-1, vocab).index_select(0, rows_b * width + rows_t)  # == full[:, :-1][scored]
            gold = targets[scored]
            log_probs = F.log_softmax(tokens, dim=-1)
            nll = torch.zeros(scored.shape, dtype=log_probs.dtype, device=device).masked_scatter_(
                scored, -log_probs.gather(1, gold.unsqueeze(1)).squeeze(1))
            correct += int((tokens.argmax(-1) == gold).sum())
            if on_logits is not None:
                on_logits(tokens.cpu(), gold.cpu(), log_probs=log_probs.cpu())
            for row, doc in enumerate(docs.tolist()):
                doc_nll[doc] += float(nll[row].sum())
                doc_tokens[doc] += int(scored[row].sum())
        total_tokens = sum(doc_tokens)
        mean_nll = sum(doc_nll) / max(total_tokens, 1)
        if out_dir is not None:
            with open(Path(out_dir) / f"predictions_{split}.jsonl", "w", encoding="utf-8") as handle:
                for doc, (nll_sum, count) in enumerate(zip(doc_nll, doc_tokens)):
                    handle.write(json.dumps({"doc": doc, "tokens": count, "nll_sum": nll_sum,
                                             "mean_nll": nll_sum / max(count, 1)}) + "\n")
        return {
            "quality.ppl": math.exp(mean_nll),
            "quality.nll": mean_nll,
            "quality.token_accuracy": correct / max(total_tokens, 1),
            "quality.ppl_protocol": self.ppl_protocol,
        }
