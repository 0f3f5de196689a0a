"""What a run prints: a short summary, no third-party noise by default, --help, sweep tables."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import lightning as L
import torch

from compbench.training.progress import StepProgressBar
from conftest import REPO

FAST = ("debug=fast", "evaluation.robustness.max_examples=8", "evaluation.efficiency.repeats=2")
#: Lines third-party libraries print unless silenced (all seen in default runs before the fix).
NOISE = re.compile(r"torchao|triton|_pytree|litlogger|LeafSpec|Writing model shards|Loading weights|USDT|"
                   r"GPU available|Using default tokenizer|Epoch \d|UserWarning|FutureWarning|DeprecationWarning|"
                   r"is deprecated", re.IGNORECASE)


def _output(proc) -> list[str]:
    return [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]


def test_default_run_prints_a_short_summary_and_no_third_party_noise(run_compbench):
    # Summarization: the chattiest path (absl's tokenizer notes, generation, three families of logs).
    proc, rows = run_compbench("model=tiny_bart", "task=smoke_summarization", *FAST)
    lines = _output(proc)
    noisy = [line for line in lines if NOISE.search(line)]
    assert not noisy, f"third-party noise on the console: {noisy}"
    assert len(lines) <= 30, "\n".join(lines)
    text = "\n".join(lines)
    for heading in ("quality      rougeL", "calibration  ECE", "robustness", "efficiency", "row", "run folder",
                    "compbench-report show"):
        assert heading in text
    assert rows[0]["run_id"] in text
    # Silenced on the console, not lost: the run's log keeps the libraries' messages.
    run_log = (Path(rows[0]["run_dir"]) / "run.log").read_text()
    assert "GPU available" in run_log


def test_verbose_brings_third_party_output_back(run_compbench):
    proc, rows = run_compbench(*FAST, "verbose=true")
    assert rows[0]["status"] == "ok"
    assert "GPU available" in proc.stdout + proc.stderr


def test_summary_names_the_fp32_teacher_when_the_store_has_it(run_compbench, tmp_path):
    results = tmp_path / "shared_results"
    run_compbench(*FAST, output_dir=results)
    proc, rows = run_compbench(*FAST, "method=ptq_dynamic_int8", output_dir=results)
    baseline = next(r for r in rows if r["method"] == "none")
    assert f"(fp32 teacher {baseline['quality.f1']:.4g}, run {baseline['run_id'][:15]})" in proc.stdout


def test_help_describes_groups_and_examples():
    proc = subprocess.run([sys.executable, "-m", "compbench.cli", "--help"], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0
    assert "powered by Hydra" not in proc.stdout
    assert "Examples:" in proc.stdout and "compbench-report" in proc.stdout
    methods = sorted(p.stem for p in (REPO / "conf" / "method").glob("*.yaml"))
    assert f"method: {', '.join(methods)}" in proc.stdout
    assert len(proc.stdout.splitlines()) < 50


def test_multirun_ends_with_the_sweeps_rows_side_by_side(run_compbench):
    proc, rows = run_compbench("method=prune_magnitude", "method.sparsity=0.5,0.9", *FAST, "-m")
    assert len(rows) == 2
    table = proc.stdout[proc.stdout.index("method sparsity"):]
    for row in rows:
        assert re.search(rf"prune_magnitude\s+{row['method.sparsity']}\s+0\s+ok\s+{row['quality.f1']:.4g}", table)


class _Tiny(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, _):
        loss = self.layer(batch[0]).pow(2).mean()
        self.log("train/loss", loss)
        return loss

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(6, 2)), batch_size=2)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_progress_bar_counts_steps_of_the_phase_across_epochs(tmp_path):
    bar = StepProgressBar("fine-tune")
    trainer = L.Trainer(max_steps=7, callbacks=[bar], logger=False, enable_checkpointing=False,
                        enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(_Tiny())  # 3 batches an epoch: 7 steps span 3 epochs
    assert bar.train_progress_bar.total == 7 and bar.train_progress_bar.n == 7
    assert bar.train_progress_bar.desc.startswith("fine-tune")
