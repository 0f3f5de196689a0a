"""Task evaluation against reference computations: perplexity vs torch, F1 vs seqeval."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from seqeval.metrics import f1_score
from transformers import GPT2Config, GPT2LMHeadModel

from compbench.models.tokenizer import train_bpe_tokenizer
from compbench.tasks import synthetic
from compbench.tasks.lm import CausalLMTask, sliding_windows
from compbench.tasks.ner import TokenClassificationTask, read_conll_predictions


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


def test_ner_labels_sit_on_first_subwords_and_truncated_words_are_predicted_O(tmp_path, caplog):
    sentences = synthetic.ner_sentences(60, 0)
    tok = train_bpe_tokenizer([" ".join(t) for t, _ in sentences], "encoder", 300, tmp_path / "tok")
    task = TokenClassificationTask(name="ner", source="synthetic", max_length=8,
                                   synthetic_sizes={"train": 60, "validation": 10, "test": 10})
    task.setup(tok)
    feature = task.features["train"][0]
    tokens, tags = task.splits["train"][0]
    first_subwords = [i for i, w in enumerate(feature["word_ids"]) if w >= 0 and w != feature["word_ids"][i - 1]]
    assert [feature["labels"][i] for i in first_subwords] == [task.label_list().index(tags[feature["word_ids"][i]])
                                                             for i in first_subwords]
    assert all(feature["labels"][i] == -100 for i in range(len(feature["labels"])) if i not in first_subwords)

    from transformers import XLMRobertaConfig, XLMRobertaForTokenClassification

    model = XLMRobertaForTokenClassification(XLMRobertaConfig(
        vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
        pad_token_id=tok.pad_token_id, **task.model_kwargs())).eval()
    metrics = task.evaluate(model, tmp_path)
    gold, pred = read_conll_predictions(tmp_path / "predictions_test.conll")
    assert [len(g) for g in gold] == [len(t) for t, _ in task.splits["test"]]  # every word, even truncated ones
    assert metrics["quality.f1"] == pytest.approx(f1_score(gold, pred))
    max_words = max(len({w for w in f["word_ids"] if w >= 0}) for f in task.features["test"])
    assert all(p == "O" for seq in pred for p in seq[max_words:])
    # The truncation warning names the split and, for perturbed copies, the perturbation.
    with caplog.at_level("WARNING", logger="compbench"):
        task.with_test_examples(task.splits["test"], "perturbation char_swap").evaluate(model, None)
    assert "test (perturbation char_swap) split:" in caplog.text and "beyond max_length=8" in caplog.text


def test_ner_f1_edge_cases():
    from compbench.tasks.ner import ner_quality

    assert ner_quality([["O", "O"]], [["O", "O"]])["quality.f1"] == 0.0  # no entities at all
    perfect = ner_quality([["B-PER", "I-PER", "O"]], [["B-PER", "I-PER", "O"]])
    assert perfect["quality.f1"] == 1.0 and perfect["quality.f1_PER"] == 1.0


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


def test_rouge_lsum_is_rouge_score_on_sentence_lines():
    from rouge_score import rouge_scorer

    from compbench.tasks.summarization import rouge_quality

    refs = ["The cat sat on the mat. It was happy.\nA dog barked.", "Rain fell all day. Streets flooded."]
    preds = ["A cat sat on a mat. The dog barked loudly.", "Streets flooded after rain. It fell all day."]
    got = rouge_quality(refs, preds)
    split = {"The cat sat on the mat. It was happy.\nA dog barked.": "The cat sat on the mat.\nIt was happy.\nA dog barked.",
             "Rain fell all day. Streets flooded.": "Rain fell all day.\nStreets flooded.",
             "A cat sat on a mat. The dog barked loudly.": "A cat sat on a mat.\nThe dog barked loudly.",
             "Streets flooded after rain. It fell all day.": "Streets flooded after rain.\nIt fell all day."}
    scorer = rouge_scorer.RougeScorer(["rougeL", "rougeLsum"], use_stemmer=True)
    expected = [scorer.score(split[r], split[p]) for r, p in zip(refs, preds)]
    assert got["quality.rougeLsum"] == pytest.approx(sum(e["rougeLsum"].fmeasure for e in expected) / 2)
    assert got["quality.rougeL"] == pytest.approx(sum(e["rougeL"].fmeasure for e in expected) / 2)
    assert got["quality.rougeLsum"] != got["quality.rougeL"]  # summary-level LCS differs here


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
