"""``tasks/summarization.py``: ROUGE-Lsum against rouge-score."""

from __future__ import annotations

import pytest



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
