"""End-to-end runs of the real ``compbench`` CLI (subprocess), one per model family."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from seqeval.metrics import f1_score

from compbench.tasks.ner import TokenClassificationTask, read_conll_predictions

FAST = ("debug=fast", "evaluation.robustness.max_examples=20", "evaluation.efficiency.repeats=3")
METRIC_GROUPS = ("quality.", "calib.", "robust.", "eff.")


def assert_all_groups_finite(row: dict) -> None:
    for prefix in METRIC_GROUPS:
        columns = [k for k in row if k.startswith(prefix) and k != "eff.mode"]
        assert columns, f"no {prefix}* column in the row"
    assert row["eff.mode"] in ("dense", "fake-quant", "real-kernel")
    numbers = {k: v for k, v in row.items() if k.startswith(METRIC_GROUPS) and isinstance(v, (int, float))}
    bad = [k for k, v in numbers.items() if not math.isfinite(v)]
    assert not bad, f"non-finite metrics: {bad}"


def test_ner_run_writes_ok_row_and_f1_matches_seqeval_on_saved_predictions(run_compbench):
    proc, rows = run_compbench(*FAST, "finetune.max_steps=60")
    assert len(rows) == 1
    row = rows[0]
    assert row["status"] == "ok" and row["error"] == ""
    assert row["model"] == "tiny_afriberta" and row["task"] == "smoke" and row["method"] == "none"
    assert row["main_metric"] == TokenClassificationTask.main_metric  # named by the task, read by reports
    assert_all_groups_finite(row)
    run_dir = Path(row["run_dir"])
    assert row["run_id"] in run_dir.name
    gold, pred = read_conll_predictions(run_dir / "predictions_test.conll")
    assert row["quality.f1"] == pytest.approx(f1_score(gold, pred), abs=1e-12)
    assert row["quality.f1"] > 0.2, "60 fine-tuning steps on the smoke task must beat chance clearly"
    record = json.loads((run_dir / "record.json").read_text())
    assert record["row"]["run_id"] == row["run_id"] and record["config"]["model"]["name"] == "tiny_afriberta"
    assert (run_dir / "calibration.npz").exists() and (run_dir / "export" / "compbench_export.json").exists()
    assert "quality.f1" in proc.stdout  # the printed table


def test_causal_lm_run_with_gpt2_twin(run_compbench):
    _, rows = run_compbench(*FAST, "model=tiny_gpt2", "task=smoke_lm")
    row = rows[0]
    assert row["status"] == "ok", row["error"]
    assert_all_groups_finite(row)
    assert 1 < row["quality.ppl"] < 2000  # vocab is 2000: finite and not worse than uniform
    docs = [json.loads(l) for l in (Path(row["run_dir"]) / "predictions_test.jsonl").read_text().splitlines()]
    total = sum(d["nll_sum"] for d in docs) / sum(d["tokens"] for d in docs)
    assert math.exp(total) == pytest.approx(row["quality.ppl"], rel=1e-9)
    assert row["quality.ppl_protocol"] == "per_document"
    # LM robustness drops are NLL increases in nats: ln of the perplexity ratio.
    perturbation = next(k.split(".")[1] for k in row if k.endswith(".drop") and k != "robust.mean_drop")
    assert row[f"robust.{perturbation}.drop"] == pytest.approx(
        math.log(row[f"robust.{perturbation}.ppl"] / row["robust.clean.ppl"]), rel=1e-6, abs=1e-9)


def test_summarization_run_with_bart_twin(run_compbench):
    _, rows = run_compbench(*FAST, "model=tiny_bart", "task=smoke_summarization", "finetune.max_steps=80")
    row = rows[0]
    assert row["status"] == "ok", row["error"]
    assert_all_groups_finite(row)
    preds = (Path(row["run_dir"]) / "predictions_test.jsonl").read_text().splitlines()
    assert len(preds) == 32 and all({"reference", "prediction"} <= set(json.loads(p)) for p in preds)
    assert row["quality.rougeL"] > 0.05  # random init scores ~0
    assert 0 < row["quality.rougeLsum"] <= 1


def test_second_run_reuses_cached_teacher_and_is_faster(run_compbench, tmp_path):
    out = tmp_path / "shared_results"
    args = ("finetune.max_steps=40", "evaluation.robustness.enabled=false", "evaluation.efficiency.repeats=2",
            "task.max_train_samples=256", "task.max_eval_samples=32")
    first_proc, _ = run_compbench(*args, output_dir=out)
    second_proc, rows = run_compbench(*args, "seed=0", output_dir=out)
    first, second = rows
    assert first["teacher_hash"] == second["teacher_hash"]
    assert first["teacher_reused"] is False and second["teacher_reused"] is True
    assert "Teacher reused from cache" in (second_proc.stdout + second_proc.stderr)
    assert "Teacher not in cache" in (first_proc.stdout + first_proc.stderr)
    assert second["duration_s"] < first["duration_s"]
    assert second["quality.f1"] == pytest.approx(first["quality.f1"])  # same teacher, same predictions


def test_incompatible_model_and_task_is_refused_before_any_work(run_compbench):
    proc, rows = run_compbench("model=tiny_bart", "task=smoke", check=False)
    assert proc.returncode == 1
    message = proc.stderr.strip().splitlines()[-1]
    assert "task 'smoke' (token_classification) needs an encoder or decoder model" in message
    assert "compatible models:" in message and "tiny_afriberta" in message
    assert rows[0]["status"] == "failed" and "compatible models" in rows[0]["error"]
    assert rows[0]["duration_s"] < 30 and not list((Path(rows[0]["run_dir"])).glob("export"))


def test_missing_data_dir_is_refused_with_one_sentence(run_compbench, tmp_path):
    proc, rows = run_compbench("task=masakhaner", f"task.data_dir={tmp_path / 'nope'}", check=False)
    assert proc.returncode == 1
    assert "does not exist; point it at a folder" in proc.stderr
    assert rows[0]["status"] == "failed"


def test_local_model_directory_through_the_hub_code_path(run_compbench, tmp_path):
    """``model=hub model.name_or_path=<folder>``: the same from_pretrained path as a hub id."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from compbench.models.tokenizer import train_bpe_tokenizer
    from compbench.tasks import synthetic

    folder = tmp_path / "my-gpt2"
    tok = train_bpe_tokenizer(synthetic.lm_documents(200, 10), "decoder", 500, tmp_path / "tok")
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_layer=1, n_embd=32, n_head=2,
                                       bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id))
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    _, rows = run_compbench(*FAST, "model=hub", f"model.name_or_path={folder}", "model.name=my_gpt2",
                            "task=smoke_lm", "evaluation.robustness.enabled=false")
    row = rows[0]
    assert row["status"] == "ok", row["error"]
    assert row["model"] == "my_gpt2" and math.isfinite(row["quality.ppl"])


def test_contrastive_qat_two_bit_gpt2_through_the_cli(run_compbench):
    """The issue's headline command: QuantGPT-style 2-bit contrastive QAT on the GPT-2 twin."""
    _, rows = run_compbench(*FAST, "model=tiny_gpt2", "task=smoke_lm", "method=contrastive_qat", "method.w_bits=2",
                            "method.max_steps=10", "evaluation.robustness.enabled=false")
    row = rows[0]
    assert row["status"] == "ok", row["error"]
    assert row["method"] == "contrastive_qat" and row["method.w_bits"] == 2
    assert row["eff.compression_ratio"] > 4  # 2-bit packed weights; embeddings and fp16 extras bound it
    assert math.isfinite(row["quality.ppl"])
    # The cost of compressing: 10 timed steps inside the chain's wall time; the teacher's fine-tuning time.
    assert row["eff.train_steps"] == 10 and row["eff.train_step_ms"] > 0
    assert row["eff.train_time_s"] >= 10 * row["eff.train_step_ms"] / 1e3 / 2
    assert row["eff.teacher_train_time_s"] > 0


def write_ptb_folder(folder: Path, seed: int = 0) -> Path:
    """A small folder in Mikolov's PTB format: ``ptb.{train,valid,test}.txt``, one lowercased
    sentence per line with a leading and a trailing space, numbers as ``N``, no punctuation,
    rare words as ``<unk>``."""
    import random

    rng = random.Random(seed)
    words = "the a market stock rose fell N percent <unk> company said shares of in to year new".split()
    folder.mkdir(parents=True, exist_ok=True)
    for split, n_sentences in (("train", 400), ("valid", 40), ("test", 40)):
        lines = [" " + " ".join(rng.choice(words) for _ in range(rng.randint(4, 20))) + " \n" for _ in range(n_sentences)]
        (folder / f"ptb.{split}.txt").write_text("".join(lines), encoding="utf-8")
    return folder


def test_contrastive_qat_on_a_ptb_format_folder(run_compbench, tmp_path):
    """The headline command on any PTB-format folder (``task=ptb task.data_dir=...``): splits read
    from ``ptb.*.txt``, the test split scored as one stream."""
    data = write_ptb_folder(tmp_path / "ptb")
    _, rows = run_compbench(*FAST, "model=tiny_gpt2", "task=ptb", f"task.data_dir={data}", "task.max_length=64",
                            "task.stride=32", "method=contrastive_qat", "method.w_bits=2", "method.max_steps=5")
    row = rows[0]
    assert row["status"] == "ok", row["error"]
    assert row["task"] == "ptb" and row["method"] == "contrastive_qat" and row["eff.train_steps"] == 5
    assert_all_groups_finite(row)
    assert 1 < row["quality.ppl"] < 2000  # vocab is 2000: finite and not worse than uniform
    docs = (Path(row["run_dir"]) / "predictions_test.jsonl").read_text().splitlines()
    assert len(docs) == 1  # doc_split none: the test file is one stream
    log = (Path(row["run_dir"]) / "run.log").read_text()
    assert "ptb.train.txt" in log and "ptb.valid.txt" in log and "ptb.test.txt" in log


def test_teacher_requiring_method_without_a_teacher_is_refused_before_training(run_compbench, tmp_path):
    proc, rows = run_compbench("method=kd", "finetune.enabled=false", check=False)
    assert proc.returncode == 1
    assert "method 'kd' needs a fine-tuned teacher but this run has none" in rows[0]["error"]
    assert not (tmp_path / "results" / "cache" / "teachers").exists()  # refused before any model was built
