"""The LightningModule hands its training scalars to Lightning only on the steps the loggers write,
and the loggers still receive them on exactly those steps (every ``log_every_n_steps``)."""

import csv

import lightning as L
import torch
from lightning.pytorch.loggers import CSVLogger
from transformers import GPT2Config, GPT2LMHeadModel

from compbench.training.module import CompressionModule


def test_training_scalars_reach_the_logger_every_n_steps(tmp_path):
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50, n_positions=16))
    batches = []
    for _ in range(25):
        ids = torch.randint(0, 50, (2, 8))
        batches.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()})
    module = CompressionModule(model, lr=1e-3, max_steps=25)
    calls = []
    original = module.log
    module.log = lambda name, *a, **k: (calls.append(name), original(name, *a, **k))[1]
    trainer = L.Trainer(max_steps=25, log_every_n_steps=5, logger=CSVLogger(tmp_path, name="x"),
                        enable_progress_bar=False, enable_checkpointing=False, enable_model_summary=False)
    trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader(batches, batch_size=None))
    rows = list(csv.DictReader(open(next(tmp_path.rglob("metrics.csv")))))
    logged_steps = sorted(int(r["step"]) for r in rows if r.get("train/loss"))
    assert logged_steps == [4, 9, 14, 19, 24]
    assert all(r["train/task_loss"] for r in rows if r.get("train/loss"))
    assert calls.count("train/loss") == 5  # handed over only on those steps


def _fit(lr, clip, steps=3):
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50, n_positions=16))
    ids = torch.randint(0, 50, (2, 8))
    batches = [{"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}] * steps
    module = CompressionModule(model, lr=lr, max_steps=steps)
    seen = []
    original = torch.nn.utils.clip_grad_norm_

    def spy(params, max_norm, *a, **k):
        norm = original(params, max_norm, *a, **k)
        seen.append((float(norm), float(torch.nn.utils.get_total_norm([p.grad for p in params]))))
        return norm

    torch.nn.utils.clip_grad_norm_ = spy
    try:
        trainer = L.Trainer(max_steps=steps, gradient_clip_val=clip, logger=False, enable_progress_bar=False,
                            enable_checkpointing=False, enable_model_summary=False)
        trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader(batches, batch_size=None))
    finally:
        torch.nn.utils.clip_grad_norm_ = original
    return seen


def test_gradient_clipping_clips_once_per_step_to_the_configured_norm():
    seen = _fit(lr=1e-3, clip=0.01)
    assert len(seen) == 3  # one norm per step
    assert all(before > 0.01 and after <= 0.01 * 1.001 for before, after in seen)


def test_non_finite_gradient_norm_stops_training_with_clipping_on(monkeypatch):
    from compbench.training import module as module_mod

    def nan_grads(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        for p in self.model.parameters():
            p.grad = torch.full_like(p, float("nan"))
        return orig(self, optimizer, gradient_clip_val, gradient_clip_algorithm)

    orig = module_mod.CompressionModule.configure_gradient_clipping
    monkeypatch.setattr(module_mod.CompressionModule, "configure_gradient_clipping", nan_grads)
    import pytest

    with pytest.raises(FloatingPointError, match="non-finite gradient norm"):
        _fit(lr=1e-3, clip=1.0)
