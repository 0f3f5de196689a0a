"""The one LightningModule: optimizer groups and schedule, the method's hooks each step, the
frozen teacher, and the names of what it logs. (When the training scalars reach the loggers,
and gradient clipping, are in ``test_module_logging.py``.)"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from typing import ClassVar

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from method_harness import METHOD_CONF, tiny_batch, tiny_model
from omegaconf import OmegaConf
from run_harness import SpyMethod, read_events
from transformers import Trainer

from compbench.methods import build_method
from compbench.methods.base import MethodContext
from compbench.training.module import CompressionModule

FAMILIES = ("encoder", "decoder", "encoder_decoder")


@dataclass
class TeacherSpy(SpyMethod):
    """A spy that distils: the module must forward the teacher for it."""

    requires_teacher: ClassVar[bool] = True


@dataclass
class GroupedSpy(SpyMethod):
    """A spy with its own optimizer groups (as methods with learned scales have)."""

    def param_groups(self, model, lr, weight_decay):
        params = [p for p in model.parameters() if p.requires_grad]
        return [{"params": params[:1], "lr": lr * 10, "weight_decay": 0.0},
                {"params": params[1:], "weight_decay": weight_decay}]


@dataclass
class NaNSpy(SpyMethod):
    def training_loss(self, out):
        return out.task_loss * float("nan"), {}


def fit(module: CompressionModule, batches: list[dict], steps: int, tmp_path=None, val: bool = False) -> L.Trainer:
    logger = CSVLogger(tmp_path, name="m") if tmp_path is not None else False
    trainer = L.Trainer(max_steps=steps, logger=logger, log_every_n_steps=1, enable_progress_bar=False,
                        enable_checkpointing=False, enable_model_summary=False,
                        limit_val_batches=1 if val else 0, val_check_interval=steps, check_val_every_n_epoch=None)
    loader = torch.utils.data.DataLoader(batches, batch_size=None)
    trainer.fit(module, train_dataloaders=loader, val_dataloaders=loader if val else None)
    return trainer


@pytest.mark.parametrize("family", FAMILIES)
def test_weight_decay_spares_biases_and_norms_as_the_transformers_trainer_does(family):
    model = tiny_model(family)
    frozen = next(p for n, p in model.named_parameters() if n.endswith("embed_positions.weight")
                  or n.endswith("position_embeddings.weight") or n.endswith("wpe.weight"))
    frozen.requires_grad_(False)
    module = CompressionModule(model, lr=1e-3, weight_decay=0.1, max_steps=10)
    optimizer = module.configure_optimizers()["optimizer"]

    decayed, spared = [], []
    for group in optimizer.param_groups:
        (decayed if group["weight_decay"] > 0 else spared).extend(id(p) for p in group["params"])
    assert all(g["weight_decay"] in (0.0, 0.1) for g in optimizer.param_groups)
    # Reference: the transformers Trainer's rule (no decay for LayerNorm modules and names with bias/norm).
    reference = set(Trainer.get_decay_parameter_names(None, model))
    by_id = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        by_id.setdefault(id(p), set()).add(name)
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert len(decayed) + len(spared) == len(set(decayed) | set(spared)), "a parameter is in two groups"
    assert set(decayed) | set(spared) == trainable, "every trainable parameter, and no frozen one, is optimised"
    assert {i for i in trainable if by_id[i] & reference} == set(decayed)
    assert spared and decayed


def test_a_methods_own_param_groups_replace_the_default_ones():
    model = tiny_model("decoder")
    module = CompressionModule(model, GroupedSpy(), lr=1e-3, weight_decay=0.1, max_steps=10)
    groups = module.configure_optimizers()["optimizer"].param_groups
    # The peak rates (the warm-up schedule starts the live "lr" at 0).
    assert [g["initial_lr"] for g in groups] == [1e-2, 1e-3] and [g["weight_decay"] for g in groups] == [0.0, 0.1]
    assert len(groups[0]["params"]) == 1


@pytest.mark.parametrize("warmup_ratio,max_steps", [(0.1, 50), (0.0, 7), (0.5, 4)])
def test_learning_rate_warms_up_linearly_then_decays_linearly_to_zero(warmup_ratio, max_steps):
    lr = 2e-3
    module = CompressionModule(tiny_model("decoder"), lr=lr, warmup_ratio=warmup_ratio, max_steps=max_steps)
    setup = module.configure_optimizers()
    optimizer, scheduler = setup["optimizer"], setup["lr_scheduler"]["scheduler"]
    assert setup["lr_scheduler"]["interval"] == "step"
    warmup = int(warmup_ratio * max_steps)
    for step in range(max_steps + 1):
        expected = lr * step / warmup if step < warmup else lr * (max_steps - step) / (max_steps - warmup)
        assert optimizer.param_groups[0]["lr"] == pytest.approx(expected, abs=1e-12), step
        optimizer.step()
        scheduler.step()


@pytest.mark.parametrize("method_cls,teacher_forwarded", [(SpyMethod, "no"), (TeacherSpy, "yes")])
def test_each_step_calls_the_method_hooks_and_the_teacher_stays_frozen(method_cls, teacher_forwarded, tmp_path):
    events = tmp_path / "events.txt"
    student, teacher = tiny_model("decoder"), tiny_model("decoder", seed=1)
    teacher_weights = {k: v.clone() for k, v in teacher.state_dict().items()}
    batches = [tiny_batch("decoder", batch_size=2, seq_len=8, seed=s) for s in range(3)]
    module = CompressionModule(student.eval(), method_cls(name="spy", events=str(events)), teacher=teacher,
                               lr=1e-3, max_steps=3)
    fit(module, batches, steps=3)

    assert read_events(events) == [
        line for step in (1, 2, 3)
        for line in (f"spy.training_loss teacher={teacher_forwarded}", f"spy.on_train_step {step}/3 train")
    ]  # the model arrived in eval mode and trained in train mode; the last call sees step == max_steps
    assert len(module.step_times_s) == 3 and all(t > 0 for t in module.step_times_s)
    for key, value in teacher.state_dict().items():
        torch.testing.assert_close(value, teacher_weights[key], rtol=0, atol=0)
    assert not any(p.requires_grad for p in teacher.parameters()) or teacher_forwarded == "no"
    # The teacher is neither checkpointed nor optimised with the student.
    assert all(k.startswith("model.") for k in module.state_dict())
    assert {id(p) for p in module.parameters()} == {id(p) for p in student.parameters()}


def test_logged_metric_names_are_train_loss_task_loss_method_scalars_and_val_loss(tmp_path):
    batches = [tiny_batch("decoder", batch_size=2, seq_len=8, seed=s) for s in range(2)]
    module = CompressionModule(tiny_model("decoder"), SpyMethod(name="spy", events=str(tmp_path / "e.txt")),
                               lr=1e-3, max_steps=2)
    fit(module, batches, steps=2, tmp_path=tmp_path, val=True)
    rows = list(csv.DictReader(open(next(tmp_path.rglob("metrics.csv")))))
    names = {k for r in rows for k, v in r.items() if v not in ("", None)} - {"epoch", "step"}
    assert names == {"train/loss", "train/task_loss", "train/spy_scalar", "val/loss"}
    train = [r for r in rows if r.get("train/loss")]
    assert all(float(r["train/spy_scalar"]) == 1.5 for r in train)
    # The spy's loss is the task loss: the two logged columns agree.
    assert all(float(r["train/loss"]) == pytest.approx(float(r["train/task_loss"])) for r in train)


def test_a_non_finite_loss_stops_training_at_once():
    module = CompressionModule(tiny_model("decoder"), NaNSpy(name="nan", events="/dev/null"), lr=1e-3, max_steps=5)
    with pytest.raises(FloatingPointError, match="non-finite training loss .* at step 0"):
        fit(module, [tiny_batch("decoder", batch_size=2, seq_len=8)] * 5, steps=5)


#: Every method with a training phase (a new one is picked up by its YAML), with settings that fit
#: the tiny model; ``kd_narrow`` distils into a narrower student through learned projections.
TRAINING_METHODS = {p.stem: {} for p in METHOD_CONF.glob("*.yaml") if "max_steps" in OmegaConf.load(p)}
TRAINING_METHODS.update({"kd": {"student_layers": 1}, "prune_structured": {"head_sparsity": 0.5, "ffn_sparsity": 0.5},
                         "kd_narrow": {"student_config": {"n_embd": 32}, "hidden_weight": 1.0}})


@pytest.mark.parametrize("case", sorted(TRAINING_METHODS))
def test_no_method_decays_biases_or_norm_weights(case):
    cfg = OmegaConf.to_container(OmegaConf.load(METHOD_CONF / f"{case.removesuffix('_narrow')}.yaml"), resolve=True)
    method = build_method({**cfg, **TRAINING_METHODS[case]})
    teacher = tiny_model("decoder", seed=1)
    ctx = MethodContext(family="decoder", teacher=teacher)
    method.check(ctx)
    model = method.prepare(tiny_model("decoder"), ctx)
    module = CompressionModule(model, method, teacher=teacher, lr=1e-3, weight_decay=0.1, max_steps=10)
    groups = module.configure_optimizers()["optimizer"].param_groups
    # Reference: the transformers Trainer's rule, on the student and on any module the method trains besides.
    spared = set()
    for owner in [model, *(v for v in vars(method).values() if isinstance(v, torch.nn.Module))]:
        decay = set(Trainer.get_decay_parameter_names(None, owner))
        spared |= {id(p) for n, p in owner.named_parameters() if n not in decay}
    decayed = {id(p) for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    assert spared and not decayed & spared, "a bias or norm weight is weight-decayed"
    optimised = {id(p) for g in groups for p in g["params"]}
    assert {id(p) for p in model.parameters() if p.requires_grad} <= optimised
