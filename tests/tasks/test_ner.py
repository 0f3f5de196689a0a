"""``tasks/ner.py``: labels on first subwords, F1 against seqeval."""

from __future__ import annotations

import pytest
from seqeval.metrics import f1_score

from compbench.models.tokenizer import train_bpe_tokenizer
from compbench.tasks import synthetic
from compbench.tasks.ner import TokenClassificationTask, read_conll_predictions


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
