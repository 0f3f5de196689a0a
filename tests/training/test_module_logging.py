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
