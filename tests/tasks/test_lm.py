"""``tasks/lm.py``: perplexity and sliding windows against torch's cross-entropy, both protocols."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from transformers import GPT2Config, GPT2LMHeadModel

from compbench.models.tokenizer import train_bpe_tokenizer
from compbench.tasks import synthetic
from compbench.tasks.lm import CausalLMTask, sliding_windows


@pytest.fixture(scope="module")
def lm_setup(tmp_path_factory):
    tok = train_bpe_tokenizer(synthetic.lm_documents(300, 10), "decoder", 400, tmp_path_factory.mktemp("tok"))
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_layer=1, n_embd=32, n_head=2, n_positions=128,
                                       bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)).eval()
    return tok, model


def reference_nll(model, ids: list[int], eos: int) -> tuple[float, int]:
    """Sum of NLL of every token of a document given all previous ones (EOS as start)."""
    seq = torch.tensor([[eos] + ids])
    with torch.no_grad():
        logits = model(seq).logits[0, :-1]
    return float(F.cross_entropy(logits, seq[0, 1:], reduction="sum")), len(ids)


@pytest.mark.parametrize("n,max_length,stride", [(10, 4, 2), (3, 4, 1), (100, 16, 8), (17, 16, 15), (2, 8, 4)])
def test_sliding_windows_score_every_token_once(n, max_length, stride):
    windows = sliding_windows(n, max_length, stride)
    scored = [j for begin, end, first in windows for j in range(first, end)]
    assert scored == list(range(1, n))
    assert all(end - begin <= max_length and first > begin for begin, end, first in windows)
    # Every scored token after the first window has at least max_length - stride tokens of context.
    assert all(first - begin >= min(max_length - stride, first) for begin, end, first in windows[1:])


def test_perplexity_equals_torch_cross_entropy_when_documents_fit(lm_setup):
    tok, model = lm_setup
    task = CausalLMTask(name="lm", source="synthetic", max_length=64, stride=32,
                        synthetic_sizes={"train": 50, "validation": 5, "test": 6})
    task.load()
    task.splits["test"] = [d[:120] for d in task.splits["test"]]  # fits in 64 tokens
    task.setup(tok)
    metrics = task.evaluate(model, None)
    nll, count = zip(*(reference_nll(model, ids, tok.eos_token_id) for ids in task.features["test"]))
    assert max(len(ids) for ids in task.features["test"]) < 64
    assert metrics["quality.nll"] == pytest.approx(sum(nll) / sum(count), rel=1e-5)
    assert metrics["quality.ppl"] == pytest.approx(math.exp(sum(nll) / sum(count)), rel=1e-5)


def test_documents_longer_than_the_context_are_scored_with_a_sliding_window(lm_setup, tmp_path):
    tok, model = lm_setup
    task = CausalLMTask(name="lm", source="synthetic", max_length=32, stride=16,
                        synthetic_sizes={"train": 50, "validation": 5, "test": 4})
    task.load()
    task.splits["test"] = [d[:220] for d in task.splits["test"]]  # longer than the 32-token window, within 128 positions
    task.setup(tok)
    lengths = [len(ids) for ids in task.features["test"]]
    assert max(lengths) > 32 and max(lengths) < 128, lengths
    metrics = task.evaluate(model, tmp_path)
    lines = (tmp_path / "predictions_test.jsonl").read_text().splitlines()
    docs = [json.loads(l) for l in lines]
    assert [d["tokens"] for d in docs] == [len(ids) for ids in task.features["test"]]  # each token once
    # The windowed NLL sees at most 32 tokens of context, so it differs from the full-context
    # reference, but only slightly for a 1-layer random model; identical token counts above.
    full = sum(reference_nll(model, ids, tok.eos_token_id)[0] for ids in task.features["test"])
    assert math.isfinite(metrics["quality.ppl"])
    assert sum(d["nll_sum"] for d in docs) == pytest.approx(full, rel=0.05)


def test_joined_stream_protocol_is_the_hf_guide_sliding_window(lm_setup):
    """joined_stream: the split joined by "\\n\\n", tokenized once, scored with windows of
    max_length moved by stride, each token once; reference written out as in the HF guide (but
    summing token NLLs instead of averaging window means)."""
    tok, model = lm_setup
    task = CausalLMTask(name="lm", source="synthetic", max_length=32, stride=16, ppl_protocol="joined_stream",
                        synthetic_sizes={"train": 50, "validation": 5, "test": 3})
    task.load()
    task.splits["test"] = [d[:60] for d in task.splits["test"]]
    task.setup(tok)
    metrics = task.evaluate(model, None)
    stream = torch.tensor([tok("\n\n".join(task.splits["test"]), add_special_tokens=False)["input_ids"]])
    seq_len = stream.shape[1]
    assert 32 < seq_len < 128
    total, count, prev_end = 0.0, 0, 0
    for begin in range(0, seq_len, 16):
        end = min(begin + 32, seq_len)
        trg_len = end - prev_end
        input_ids = stream[:, begin:end]
        target = input_ids.clone()
        target[:, :-trg_len] = -100
        with torch.no_grad():
            logits = model(input_ids).logits[0, :-1]
        labels = target[0, 1:]
        total += float(F.cross_entropy(logits, labels, ignore_index=-100, reduction="sum"))
        count += int((labels != -100).sum())
        prev_end = end
        if end == seq_len:
            break
    assert count == seq_len - 1  # every token but the first, once
    assert metrics["quality.ppl_protocol"] == "joined_stream"
    assert metrics["quality.nll"] == pytest.approx(total / count, rel=1e-5)
    # The per-document protocol scores other tokens (an EOS prefix per document, no separators).
    per_doc = CausalLMTask(name="lm", source="synthetic", max_length=32, stride=16,
                           synthetic_sizes={"train": 50, "validation": 5, "test": 3})
    per_doc.load()
    per_doc.splits["test"] = task.splits["test"]
    per_doc.setup(tok)
    result = per_doc.evaluate(model, None)
    assert result["quality.ppl_protocol"] == "per_document" and result["quality.nll"] != metrics["quality.nll"]


def test_unknown_ppl_protocol_is_refused():
    from compbench.errors import ConfigError

    with pytest.raises(ConfigError, match="ppl_protocol"):
        CausalLMTask(name="lm", source="synthetic", ppl_protocol="hf")


def test_lm_evaluation_matches_the_whole_batch_reference_exactly(lm_setup):
    """The LM pass computes one log-softmax of the scored positions and shares it with the
    calibration callback; its NLL, accuracy and callback tensors must equal, bit for bit, the
    plain whole-batch computation (F.cross_entropy, argmax, boolean-mask selection)."""
    tok, model = lm_setup
    task = CausalLMTask(name="lm", source="synthetic", max_length=32, stride=16,
                        synthetic_sizes={"train": 50, "validation": 5, "test": 6})
    task.load()
    task.splits["test"] = [d[: 40 + 25 * i] for i, d in enumerate(task.splits["test"])]  # padding and windows
    task.setup(tok)
    seen: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    metrics = task.evaluate(model, None, "test", lambda lo, la, log_probs=None: seen.append((lo, la, log_probs)))
    ref_nll, ref_tokens, ref_correct, batches = 0.0, 0, 0, 0
    with torch.no_grad():
        for batch, (logits_seen, labels_seen, log_probs_seen) in zip(task.dataloader("test"), seen, strict=True):
            full = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
            logits, targets = full[:, :-1], batch["labels"][:, 1:]
            scored = targets != -100
            nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.clamp(min=0).reshape(-1),
                                  reduction="none").view(targets.shape) * scored
            assert torch.equal(logits_seen, logits[scored]) and torch.equal(labels_seen, targets[scored])
            assert torch.equal(log_probs_seen, F.log_softmax(logits[scored], dim=-1))
            ref_nll += sum(float(row.sum()) for row in nll)
            ref_tokens += int(scored.sum())
            ref_correct += int(((logits.argmax(-1) == targets) & scored).sum())
            batches += int((~scored).any())
    assert batches > 0  # the batches really had unscored (padded or context) positions
    assert metrics["quality.token_accuracy"] == ref_correct / ref_tokens
    assert metrics["quality.nll"] == pytest.approx(ref_nll / ref_tokens, rel=1e-12)
