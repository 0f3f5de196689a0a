"""``training/plan.py``: a run's objects built and validated once, before any work; the choice of
the evaluation device, refused with one sentence when impossible."""

from __future__ import annotations

import pytest
import torch
from run_harness import CONF_DIR, compose_run

from compbench.errors import ConfigError
from compbench.methods.none import NoCompression
from compbench.methods.quantization.ptq_llm_int8 import LLMInt8PTQ
from compbench.training.plan import build_plan, evaluation_device


def test_auto_follows_the_hardware_and_cpu_is_always_possible_for_dense_models():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert evaluation_device("auto", NoCompression()).type == expected
    assert evaluation_device("cpu", NoCompression()).type == "cpu"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_cuda_without_a_gpu_is_refused_in_one_sentence():
    with pytest.raises(ConfigError, match="no CUDA device is available; use evaluation.device=auto"):
        evaluation_device("cuda", NoCompression())


def test_cuda_only_kernels_cannot_be_evaluated_on_the_cpu():
    with pytest.raises(ConfigError, match="cannot run on the CPU"):
        evaluation_device("cpu", LLMInt8PTQ())


def test_unknown_device_setting_is_refused():
    with pytest.raises(ConfigError, match="not one of auto, cpu, cuda"):
        evaluation_device("tpu", NoCompression())


def test_dynamic_int8_is_cpu_only_so_auto_keeps_it_on_the_cpu(monkeypatch):
    from compbench.methods.quantization.ptq_dynamic_int8 import DynamicInt8PTQ

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # even where CUDA exists
    assert evaluation_device("auto", DynamicInt8PTQ()).type == "cpu"
    with pytest.raises(ConfigError, match="runs on cpu only"):
        evaluation_device("cuda", DynamicInt8PTQ())


@pytest.mark.parametrize(("accelerator", "cuda", "expected"), [
    ("auto", True, "cuda"), ("gpu", True, "cuda"), ("cpu", True, "cpu"), ("auto", False, "cpu"),
])
def test_methods_get_the_run_device(monkeypatch, accelerator, cuda, expected):
    from omegaconf import OmegaConf

    from compbench.methods.base import MethodContext
    from compbench.training.plan import method_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    device = method_device(OmegaConf.create({"trainer": {"accelerator": accelerator}}))
    assert device.type == expected
    # ptq_llm_int8's check passes exactly when the run's device is a CUDA one.
    if expected == "cuda":
        LLMInt8PTQ().check(MethodContext(family="decoder", device=device))
    else:
        with pytest.raises(ConfigError, match="CUDA"):
            LLMInt8PTQ().check(MethodContext(family="decoder", device=device))


def test_the_plan_holds_every_object_a_run_needs_built_once(tmp_path, monkeypatch):
    from compbench.training import plan as plan_module

    built = []
    original = plan_module.build_dataclass
    monkeypatch.setattr(plan_module, "build_dataclass", lambda cfg, what: built.append(what) or original(cfg, what))
    cfg = compose_run(tmp_path, "encoder", "method=prune_magnitude", "+evaluation.ood.other={max_eval_samples: 8}")
    plan = build_plan(cfg, CONF_DIR)
    assert plan.family == "encoder" and plan.task.name == "smoke" and [m.name for m in plan.methods] == ["prune_magnitude"]
    assert list(plan.ood_tasks) == ["other"] and plan.ood_tasks["other"] is not plan.task
    assert plan.device.type == plan.eval_device.type == "cpu" and plan.pretrain is None
    assert built.count("task") == 1 and built.count("evaluation.ood.other task") == 1  # each task built once
    ctx = plan.method_context()
    assert ctx.family == "encoder" and ctx.teacher is None
    assert ctx.teacher_available == plan.has_teacher == bool(cfg.finetune.enabled)
    assert (ctx.finetune_steps is not None) == plan.has_teacher


def test_a_refused_method_parameter_stops_the_plan_before_any_work(tmp_path):
    cfg = compose_run(tmp_path, "encoder", "method=prune_magnitude", "method.sparsity=1.5")
    with pytest.raises(ConfigError, match="sparsity"):
        build_plan(cfg, CONF_DIR)
    assert not (tmp_path / "cache").exists()

