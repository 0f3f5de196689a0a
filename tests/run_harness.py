"""Shared helpers for tests that drive the real pipeline in-process (not a test module).

``compose_run(...)`` composes the real ``conf/`` with cheap overrides, so tests run the code a
user's command runs; ``SpyMethod`` is a method whose lifecycle calls are written to a file (the
pipeline builds methods from config by ``_target_``, so the spy is named by its import path
``run_harness.SpyMethod``; ``tests/`` is on ``sys.path`` via ``conftest.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf, open_dict

from compbench.errors import ConfigError
from compbench.methods.base import Method, MethodContext, TrainingOutputs

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"

#: One tiny model config and a task it serves, per family.
FAMILY_RUNS = {
    "encoder": ("tiny_afriberta", "smoke"),
    "decoder": ("tiny_gpt2", "smoke_lm"),
    "encoder_decoder": ("tiny_bart", "smoke_summarization"),
}

#: A run that exercises every stage on a few examples: no fine-tuning (the teacher is the
#: freshly built tiny model), one perturbation, small evaluation sets, a short latency timing.
CHEAP = (
    "debug=fast", "logger=none", "finetune.enabled=false", "task.max_eval_samples=8",
    "evaluation.robustness.max_examples=4", "evaluation.robustness.perturbations=[{name: char_swap, rate: 0.1}]",
    "evaluation.efficiency.repeats=2", "evaluation.efficiency.warmup=1", "evaluation.efficiency.seq_len=16",
    "evaluation.efficiency.batch_size=2", "evaluation.calibration.max_dev_tokens=128",
    "trainer.enable_progress_bar=false",
)


def compose_run(output_dir: Path, family: str = "decoder", *overrides: str, cheap: bool = True) -> DictConfig:
    """The composed config of ``compbench model=<tiny twin of family> task=<its smoke task> ...``."""
    model, task = FAMILY_RUNS[family]
    args = [f"model={model}", f"task={task}", f"paths.output_dir={output_dir}", *(CHEAP if cheap else ()), *overrides]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=args)


def set_method_chain(cfg: DictConfig, *stages: dict[str, Any]) -> DictConfig:
    """Replace ``cfg.method`` by a chain (``method.stages``, as experiment files write it)."""
    with open_dict(cfg):
        cfg.method = OmegaConf.create({"name": "chain", "stages": {s["name"]: s for s in stages}})
    return cfg


def spy_stage(name: str, events: Path, **fields: Any) -> dict[str, Any]:
    """The config of one ``SpyMethod`` stage."""
    return {"_target_": f"{__name__}.SpyMethod", "name": name, "events": str(events), **fields}


def note(events: str | Path, text: str) -> None:
    """Append one event line to the events file."""
    with open(events, "a") as f:
        f.write(text + "\n")


def read_events(events: Path) -> list[str]:
    return Path(events).read_text().splitlines() if Path(events).exists() else []


@dataclass
class SpyMethod(Method):
    """A method that writes ``<name>.<hook>`` to ``events`` on every lifecycle call.

    ``fail_in`` names a hook that raises (``check`` raises the ``ConfigError`` a method uses to
    refuse a run; the others a ``RuntimeError``); ``zero_weights`` makes ``prepare`` zero every
    parameter in place (a stand-in for any method that modifies the model it is given).
    """

    name: str = "spy"
    events: str = ""
    fail_in: str = ""
    zero_weights: bool = False
    max_steps: int = 0
    lr: float = 1e-3

    def _hook(self, hook: str, extra: str = "") -> None:
        note(self.events, f"{self.name}.{hook}{extra}")
        if self.fail_in == hook:
            if hook == "check":
                raise ConfigError(f"spy method '{self.name}' refuses this run.")
            raise RuntimeError(f"spy method '{self.name}' failed in {hook}")

    def check(self, ctx: MethodContext) -> None:
        self._hook("check")
        super().check(ctx)

    def prepare(self, model: torch.nn.Module, ctx: MethodContext) -> torch.nn.Module:
        # The stages this model went through so far: the next stage must get the previous one's output.
        self._hook("prepare", f" after={','.join(getattr(model, '_spy_trail', [])) or '-'}")
        if self.zero_weights:
            with torch.no_grad():
                for p in model.parameters():
                    p.zero_()
        return model

    def training_loss(self, out: TrainingOutputs):
        note(self.events, f"{self.name}.training_loss teacher={'yes' if out.teacher is not None else 'no'}")
        return out.task_loss, {"spy_scalar": 1.5}

    def on_train_step(self, model, step: int, max_steps: int) -> None:
        note(self.events, f"{self.name}.on_train_step {step}/{max_steps} {'train' if model.training else 'eval'}")

    def finalize(self, model: torch.nn.Module, ctx: MethodContext) -> torch.nn.Module:
        self._hook("finalize")
        model._spy_trail = [*getattr(model, "_spy_trail", []), self.name]
        return model

    def export(self, model: torch.nn.Module, out_dir: Path, ctx: MethodContext) -> dict[str, Any]:
        if self.fail_in == "export":  # a half-written artifact, then the failure
            Path(out_dir).mkdir(parents=True, exist_ok=True)
            (Path(out_dir) / "half-written.bin").write_bytes(b"\0" * 1000)
        self._hook("export")
        return super().export(model, out_dir, ctx)
