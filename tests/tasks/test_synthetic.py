"""``tasks/synthetic.py``: the smoke data."""

from __future__ import annotations

from compbench.tasks import synthetic


def test_smoke_data_is_deterministic_and_has_unseen_test_names():
    assert synthetic.ner_sentences(50, seed=0) == synthetic.ner_sentences(50, seed=0)
    assert synthetic.ner_sentences(50, seed=0) != synthetic.ner_sentences(50, seed=1)
    train_names = {t for tokens, tags in synthetic.ner_sentences(2000, 0) for t, g in zip(tokens, tags) if g != "O"}
    test_names = {t for tokens, tags in synthetic.ner_sentences(200, 2, unseen_rate=0.3)
                  for t, g in zip(tokens, tags) if g != "O"}
    assert test_names - train_names, "validation/test must contain names never seen in training"
    for tokens, tags in synthetic.ner_sentences(100, 3):
        assert len(tokens) == len(tags)
        for prev, tag in zip(["O"] + tags, tags):
            assert not tag.startswith("I-") or prev[2:] == tag[2:], "I- must continue an entity"
