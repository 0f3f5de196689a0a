"""Every method config (``conf/method/*.yaml``) runs through the real pipeline on every family.

Picks up a new method automatically: one file + one YAML is all it takes to be tested here.
Runs in-process (the CLI itself is exercised by subprocess in ``tests/test_cli_e2e.py``).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from compbench.configs import conf_dir
from compbench.methods.export import artifact_size_bytes
from compbench.records.store import ResultsStore
from compbench.training.pipeline import run

FAMILIES = {
    "encoder": ("tiny_afriberta", "smoke"),
    "decoder": ("tiny_gpt2", "smoke_lm"),
    "encoder_decoder": ("tiny_bart", "smoke_summarization"),
}
METHODS = sorted(p.stem for p in (conf_dir() / "method").glob("*.yaml") if p.stem != "chain")
FAST = [
    "debug=fast", "logger=none", "finetune.max_steps=30", "task.max_eval_samples=16",
    "evaluation.robustness.max_examples=8", "evaluation.robustness.perturbations=[{name: char_swap, rate: 0.1}]",
    "evaluation.efficiency.repeats=2", "evaluation.efficiency.warmup=1", "evaluation.efficiency.seq_len=32",
    "evaluation.calibration.max_dev_tokens=256", "trainer.enable_progress_bar=false",
]


def method_overrides(method: str, family: str) -> list[str]:
    """Few training steps for whatever method has a training phase."""
    keys = OmegaConf.load(conf_dir() / "method" / f"{method}.yaml").keys()
    extra = []
    if "max_steps" in keys:
        extra.append("method.max_steps=3")
    if method == "prune_magnitude":
        extra += ["method.sparsity=0.8"]
    if method == "prune_structured":
        extra += ["method.head_sparsity=0.5", "method.ffn_sparsity=0.5"]
    if method == "kd":
        extra += ["method.student_layers=1"]
    return extra


@pytest.fixture(scope="module")
def results_root(tmp_path_factory) -> Path:
    # One cache for the module: each family's teacher is fine-tuned once and reused by every method.
    return tmp_path_factory.mktemp("methods_pipeline")


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("method", METHODS)
def test_method_runs_end_to_end_and_lands_a_row_with_real_sizes(method, family, results_root):
    model, task = FAMILIES[family]
    overrides = [f"model={model}", f"task={task}", f"method={method}", f"paths.output_dir={results_root}",
                 *FAST, *method_overrides(method, family)]
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    row, error = run(cfg, conf_dir())
    stored = {r["run_id"]: r for r in ResultsStore(results_root / "compbench.db").rows()}
    assert stored[row["run_id"]]["status"] == row["status"]
    if method == "ptq_llm_int8":  # bitsandbytes LLM.int8() needs a CUDA GPU: refused, as one sentence
        assert row["status"] == "failed" and "CUDA" in row["error"] and "\n" not in row["error"]
        return
    assert error is None and row["status"] == "ok", row["error"]
    assert row["method"] == method
    export = Path(row["run_dir"]) / "export"
    assert row["eff.size_mb"] == pytest.approx(artifact_size_bytes(export) / 1e6)
    assert row["eff.compression_ratio"] > 0 and row["eff.mode"] in ("dense", "fake-quant", "real-kernel")
    if method != "none":
        assert row["eff.compression_ratio"] > 1.0, "every compression method must shrink the artifact on disk"
    metrics = {k: v for k, v in row.items() if k.startswith(("quality.", "calib.", "robust.", "eff."))}
    assert all(math.isfinite(v) for v in metrics.values() if isinstance(v, float) and not k_is_drop(metrics, v))


def k_is_drop(metrics: dict, value: float) -> bool:
    """Relative drops are NaN by definition when the clean score is 0 (possible after 30 steps)."""
    return any(k.endswith("drop") and v is value for k, v in metrics.items())
