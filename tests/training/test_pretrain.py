"""Pretraining from scratch: cache key, held-out loss, resume, the stored row and the CLI paths."""

import math
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from conftest import REPO
from hydra import compose, initialize_config_dir
from transformers import AutoModelForTokenClassification, AutoTokenizer

from compbench.configs import conf_dir
from compbench.errors import ConfigError
from compbench.records.store import ResultsStore
from compbench.records.run_record import new_run_id
from compbench.training.trainer import make_trainer
from compbench.training.pretrain import (
    PretrainSpec, collator, fixed_batches, heldout_loss, make_blocks, objective_of, pretrain_key, pretrained_checkpoint,
    split_corpus,
)

TINY_ENCODER = {"model_type": "xlm-roberta", "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                "intermediate_size": 64}
TINY_DECODER = {"model_type": "gpt2", "n_embd": 32, "n_layer": 1, "n_head": 2, "n_positions": 128}


def corpus(tmp_path: Path, n: int = 400) -> Path:
    """A small, very regular text, which a model learns within a few dozen steps."""
    words = ["gida", "ruwa", "kasuwa", "yaro", "mace", "sarki", "birni", "hanya"]
    lines = [" ".join(words[(i * k) % len(words)] for k in range(1, 12)) + " ." for i in range(n)]
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def run_cfg(tmp_path: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return compose("config", overrides=[f"paths.output_dir={tmp_path / 'results'}", "trainer.enable_progress_bar=false",
                                            "resume.every_n_steps=2", *overrides])


def spec(path: Path, **kw) -> PretrainSpec:
    base = dict(corpus=str(path), lang="hau", max_steps=30, lr=3e-3, batch_size=8, max_length=32, vocab_size=300,
                val_every_n_steps=15, heldout_fraction=0.1)
    return PretrainSpec(**{**base, **kw})


def test_key_follows_corpus_content_not_its_path(tmp_path):
    path = corpus(tmp_path)
    copy = tmp_path / "elsewhere.txt"
    copy.write_bytes(path.read_bytes())
    from compbench.training.pretrain import file_digest

    key = pretrain_key("encoder", TINY_ENCODER, spec(path), file_digest(path))
    assert key == pretrain_key("encoder", TINY_ENCODER, spec(copy, lang="x", val_every_n_steps=3), file_digest(copy))
    copy.write_text(copy.read_text() + "sabuwar layi .\n")
    assert key != pretrain_key("encoder", TINY_ENCODER, spec(copy), file_digest(copy))
    assert key != pretrain_key("encoder", TINY_ENCODER, spec(path, max_steps=31), file_digest(path))
    assert key != pretrain_key("encoder", {**TINY_ENCODER, "hidden_size": 64}, spec(path), file_digest(path))


def test_bad_settings_are_refused_in_one_sentence(tmp_path):
    with pytest.raises(ConfigError, match="is not a file"):
        spec(tmp_path / "missing.txt").check_corpus()
    with pytest.raises(ConfigError, match="heldout_fraction"):
        spec(corpus(tmp_path), heldout_fraction=1.5)
    with pytest.raises(ConfigError, match="denoising for BART is not"):
        objective_of("encoder_decoder")


def test_heldout_split_is_the_tail_and_never_trains_the_tokenizer(tmp_path):
    path = corpus(tmp_path, n=100)
    train, held = split_corpus(path, 0.1)
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    assert held == lines[-10:] and train == lines[:-10]


@pytest.mark.parametrize("objective,arch,family", [("mlm", TINY_ENCODER, "encoder"), ("clm", TINY_DECODER, "decoder")])
def test_heldout_loss_is_the_mean_over_all_scored_tokens(objective, arch, family, tmp_path):
    from compbench.models.tokenizer import train_bpe_tokenizer
    from compbench.training.pretrain import build_pretraining_model

    train, held = split_corpus(corpus(tmp_path), 0.2)
    tok = train_bpe_tokenizer(train, family, 300, tmp_path / "tok")
    model = build_pretraining_model(family, arch, tok, seed=0).eval()
    blocks = make_blocks(tok, held, 16, objective)
    batches = fixed_batches(blocks, collator(tok, objective, 0.15), 3, seed=5)
    assert [b["labels"].tolist() for b in batches] == [b["labels"].tolist() for b in
                                                       fixed_batches(blocks, collator(tok, objective, 0.15), 3, seed=5)]
    nll, count = heldout_loss(model, batches, objective)
    # Reference: plain torch cross-entropy summed over every scored token, divided by their number.
    total, n = 0.0, 0
    with torch.no_grad():
        for b in batches:
            logits, labels = model(input_ids=b["input_ids"]).logits, b["labels"]
            if objective == "clm":
                logits, labels = logits[:, :-1], labels[:, 1:]
            total += float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), reduction="sum",
                                           ignore_index=-100))
            n += int((labels != -100).sum())
    assert count == n and nll == pytest.approx(total / n, rel=1e-5)


def test_pretraining_lowers_heldout_loss_stores_a_row_and_is_cached(tmp_path):
    path = corpus(tmp_path)
    cfg = run_cfg(tmp_path)
    _, _, random_row = pretrained_checkpoint("enc", "encoder", TINY_ENCODER, spec(path, max_steps=0), cfg,
                                             new_run_id())
    folder, key, row = pretrained_checkpoint("enc", "encoder", TINY_ENCODER, spec(path), cfg, new_run_id())
    assert row["status"] == "ok" and row["task"] == "pretrain" and row["method"] == "pretrain_mlm"
    assert row["quality.nll"] < random_row["quality.nll"] - 0.5  # 30 steps learn this regular text
    assert math.log(300) - 1 < random_row["quality.nll"] < math.log(300) + 1  # untrained: ~ uniform over the vocab
    stored = [r for r in ResultsStore(Path(cfg.paths.db)).rows() if r["task"] == "pretrain"]
    assert len(stored) == 2 and {r["lang"] for r in stored} == {"hau"}
    assert (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()
    again, key2, row2 = pretrained_checkpoint("enc", "encoder", TINY_ENCODER, spec(path), cfg, new_run_id())
    assert (again, key2, row2) == (folder, key, None)  # reused: no training, no second row
    assert len(ResultsStore(Path(cfg.paths.db)).rows()) == 2
    # A complete transformers folder: the task model loads its encoder weights.
    tok = AutoTokenizer.from_pretrained(folder)
    ner = AutoModelForTokenClassification.from_pretrained(folder, num_labels=3)
    assert ner(**tok(["gida ruwa"], return_tensors="pt")).logits.shape[-1] == 3


class _Kill(L.Callback):
    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step == 5:
            raise KeyboardInterrupt  # what a killed job looks like to Lightning (no exception handling)


def test_a_killed_pretraining_resumes_from_its_checkpoint(tmp_path, caplog, monkeypatch):
    path = corpus(tmp_path)
    cfg = run_cfg(tmp_path)

    def killing_trainer(*args, **kwargs):
        trainer = make_trainer(*args, **kwargs)
        trainer.callbacks.append(_Kill())
        return trainer

    monkeypatch.setattr("compbench.training.pretrain.make_trainer", killing_trainer)
    with pytest.raises(BaseException):
        pretrained_checkpoint("enc", "encoder", TINY_ENCODER, spec(path), cfg, new_run_id())
    monkeypatch.undo()
    rows = ResultsStore(Path(cfg.paths.db)).rows()
    assert [r["status"] for r in rows] == ["failed"]
    ckpts = list((tmp_path / "results" / "checkpoints").glob("pretrain-*/last.ckpt"))
    assert len(ckpts) == 1
    caplog.set_level("INFO")
    folder, _, row = pretrained_checkpoint("enc", "encoder", TINY_ENCODER, spec(path), cfg, new_run_id())
    assert row["status"] == "ok" and "Resuming from checkpoint" in caplog.text
    assert not ckpts[0].parent.exists()  # cleared once the checkpoint is cached


TINY_OVERRIDES = ["model.pretrain.max_steps=4", "model.pretrain.vocab_size=300", "model.pretrain.max_length=32",
                  "model.pretrain.batch_size=8", "model.tiny.hidden_size=32", "model.tiny.num_hidden_layers=1",
                  "model.tiny.intermediate_size=64", "model.tiny.num_attention_heads=2"]
FAST = ["task=smoke", "debug=fast", "logger=none", "evaluation.robustness.enabled=false",
        "evaluation.efficiency.repeats=2", "evaluation.efficiency.warmup=1", "evaluation.calibration.max_dev_tokens=256"]


def test_a_run_pretrains_then_finetunes_and_its_checkpoint_serves_model_hub(tmp_path):
    from compbench.training.pipeline import run

    path = corpus(tmp_path)
    cfg = run_cfg(tmp_path, "model=small_encoder_hau", f"model.pretrain.corpus={path}", *TINY_OVERRIDES, *FAST)
    row, error = run(cfg, conf_dir())
    assert error is None and row["status"] == "ok", row["error"]
    folder = next((tmp_path / "results" / "cache" / "pretrained").glob("*/pretrain.json")).parent
    row2, error = run(run_cfg(tmp_path, "model=hub", f"model.name_or_path={folder}", "model.name=pretrained", *FAST),
                      conf_dir())
    assert error is None and row2["status"] == "ok", row2["error"]
    rows = ResultsStore(Path(cfg.paths.db)).rows()
    assert sorted((r["task"], r["model"]) for r in rows) == [
        ("pretrain", "small_encoder_hau"), ("smoke", "pretrained"), ("smoke", "small_encoder_hau")]
    # Same weights at the start of fine-tuning, same task settings: the two runs' teachers differ
    # only by their model config, so they are cached separately (keys differ).
    assert row["teacher_hash"] != row2["teacher_hash"]


def test_a_missing_corpus_fails_before_any_training(tmp_path):
    from compbench.training.pipeline import run

    cfg = run_cfg(tmp_path, "model=small_encoder_hau", f"model.pretrain.corpus={tmp_path / 'nope.txt'}", *FAST)
    row, error = run(cfg, conf_dir())
    assert row["status"] == "failed" and "is not a file" in row["error"] and "\n" not in row["error"]
    assert not (tmp_path / "results" / "cache" / "pretrained").exists()


def _cli(module: str, output_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    cmd = [sys.executable, "-m", module, f"paths.output_dir={output_dir}", "logger=none", *overrides]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc


@pytest.mark.slow
def test_pretrain_cli_then_hub_finetune_and_the_one_command_path(tmp_path):
    path = corpus(tmp_path)
    out = tmp_path / "results"
    tiny = [f"model.pretrain.corpus={path}", *TINY_OVERRIDES]
    proc = _cli("compbench.pretrain_cli", out, "model=small_encoder_hau", *tiny)
    folder = next(line.split("checkpoint: ", 1)[1] for line in proc.stdout.splitlines() if line.startswith("checkpoint: "))
    _cli("compbench.cli", out, "model=hub", f"model.name_or_path={folder}", "model.name=pretrained", *FAST)
    # One command: the same model config pretrains (here: reuses the cache) and fine-tunes.
    proc = _cli("compbench.cli", out, "model=small_encoder_hau", *tiny, *FAST)
    assert "Pretrained model reused from cache" in proc.stdout + proc.stderr
    rows = ResultsStore(out / "compbench.db").rows()
    assert sorted((r["task"], r["status"]) for r in rows) == [("pretrain", "ok"), ("smoke", "ok"), ("smoke", "ok")]
    proc = subprocess.run([sys.executable, "-m", "compbench.pretrain_cli", f"paths.output_dir={out}", "model=tiny_afriberta"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "has no pretrain: block" in proc.stderr
