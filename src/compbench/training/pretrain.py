"""Pretraining from scratch on a plain-text corpus: masked LM (encoders), causal LM (decoders).

The premise of AfriBERTa (Ogueji et al. 2021) is a small model pretrained on little text. This
stage makes such a model: it trains a byte-level BPE tokenizer on the corpus's training lines
(``compbench.models.tokenizer``), builds the ``tiny:`` architecture of the model config with
random weights, trains it with the one LightningModule (identity method) and writes a complete
transformers folder (weights as safetensors, config, tokenizer) that ``model=hub
model.name_or_path=<folder>`` fine-tunes like any hub checkpoint.

Our choices (no paper fixes them at this scale; each is a ``PretrainSpec`` field):

* held-out text: the last ``heldout_fraction`` of the corpus's non-empty lines (a contiguous tail,
  so neighbouring sentences of one article do not straddle the split); the tokenizer never sees it;
* blocks: lines are tokenized (encoders: ``<s> … </s>`` per line, decoders: EOS after each line),
  concatenated and cut into blocks of ``max_length`` tokens, as transformers' ``run_mlm.py`` /
  ``run_clm.py`` group texts; the tail that does not fill a block is dropped;
* masking: transformers' ``DataCollatorForLanguageModeling`` (BERT's 15 % with 80/10/10);
  held-out masks are drawn once from ``seed`` so every evaluation scores the same positions;
* held-out loss: mean cross-entropy over the scored tokens (MLM: the masked positions; CLM:
  every next token of a block), its exponential reported as perplexity. An MLM "perplexity" is
  exp(masked-token loss), as ``run_mlm.py`` reports it; it is not comparable with a causal one.

Cached like the teacher: the folder is named by a hash of the architecture, the settings and the
corpus's *content* (SHA-256), so moving the data does not retrain and editing it does. A killed
pretraining continues from its rolling checkpoint (named by the same hash). Training it writes
one row to the results store (``task=pretrain``, ``method=pretrain_mlm``/``pretrain_clm``,
``quality.nll``/``quality.ppl`` on the held-out text). Denoising (BART) is not implemented:
an encoder-decoder model is refused with one sentence.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from filelock import FileLock
from torch.utils.data import DataLoader
from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, DataCollatorForLanguageModeling

from compbench.errors import ConfigError
from compbench.models.tiny import FAMILY_MODEL_TYPE, tiny_config
from compbench.models.tokenizer import train_bpe_tokenizer
from compbench.metrics.efficiency import count_parameters
from compbench.records.run_record import identity_columns, run_record
from compbench.records.schema import utc_timestamp
from compbench.training.module import CompressionModule
from compbench.training.resume import clear_checkpoints, resumable_checkpoint
from compbench.training.teacher import save_checkpoint_atomically
from compbench.training.trainer import checkpoint_root, make_trainer

log = logging.getLogger(__name__)

#: The pretraining objective of each family (denoising for encoder-decoders is not implemented).
OBJECTIVES = {"encoder": "mlm", "decoder": "clm"}
DONE_FILE = "pretrain.json"
#: Settings that do not change the pretrained weights (left out of the cache key).
_NOT_IN_KEY = ("corpus", "lang", "val_every_n_steps", "max_heldout_blocks")


@dataclass
class PretrainSpec:
    """How to pretrain (the ``pretrain:`` block of a model config).

    Attributes:
        corpus: plain-text file, one sentence or paragraph per line.
        lang: language label for the results row (``lang`` column).
        max_steps: optimizer steps (0: no training; the checkpoint is the random initialisation
            with the corpus's tokenizer: the same-shape baseline "without pretraining").
        lr: peak learning rate (linear warm-up, then linear decay to 0).
        weight_decay: AdamW weight decay (not on biases and norms).
        warmup_ratio: warm-up fraction of ``max_steps``.
        batch_size: blocks per step.
        max_length: tokens per block.
        vocab_size: BPE vocabulary trained on the corpus's training lines.
        mlm_probability: fraction of tokens masked (MLM only).
        heldout_fraction: tail of the corpus's lines kept out for the held-out loss.
        max_heldout_blocks: cap on held-out blocks scored (null: all); evaluation only.
        val_every_n_steps: held-out loss logged every N steps (progress only).
        seed: seed of the initialisation, the data order and the masks.
    """

    corpus: str = ""
    lang: str = ""
    max_steps: int = 1000
    lr: float = 1.0e-3
    weight_decay: float = 0.01
    warmup_ratio: float = 0.05
    batch_size: int = 32
    max_length: int = 128
    vocab_size: int = 8000
    mlm_probability: float = 0.15
    heldout_fraction: float = 0.05
    max_heldout_blocks: int | None = 256
    val_every_n_steps: int = 250
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.corpus:
            raise ConfigError("model.pretrain.corpus is empty; set it to a plain-text file (one sentence per line).")
        if self.max_steps < 0 or self.batch_size < 1 or self.max_length < 8:
            raise ConfigError("model.pretrain needs max_steps >= 0, batch_size >= 1 and max_length >= 8.")
        if not 0 < self.heldout_fraction < 1:
            raise ConfigError(f"model.pretrain.heldout_fraction must be in (0, 1), got {self.heldout_fraction}.")
        if not 0 < self.mlm_probability < 1:
            raise ConfigError(f"model.pretrain.mlm_probability must be in (0, 1), got {self.mlm_probability}.")

    def check_corpus(self) -> Path:
        """The corpus path, or one sentence saying it is missing (before any work)."""
        path = Path(self.corpus)
        if not path.is_file():
            raise ConfigError(f"model.pretrain.corpus={path} is not a file; point it at a plain-text corpus, e.g. "
                              "../shared/data/mono/hau.txt.")
        return path


def objective_of(family: str) -> str:
    """``mlm`` or ``clm`` for ``family``; one sentence for an encoder-decoder."""
    if family not in OBJECTIVES:
        raise ConfigError(f"pretraining a {family} model is not implemented (denoising for BART is not "
                          "available); pretrain an encoder (masked LM) or a decoder (causal LM).")
    return OBJECTIVES[family]


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def pretrain_key(family: str, arch: dict[str, Any], spec: PretrainSpec, corpus_sha256: str) -> str:
    """Hash (16 hex chars) of what determines the pretrained weights: the family, the ``tiny``
    architecture, the training settings and the corpus content (not its path)."""
    settings = {k: v for k, v in asdict(spec).items() if k not in _NOT_IN_KEY}
    payload = json.dumps({"family": family, "arch": arch, "pretrain": settings, "corpus_sha256": corpus_sha256},
                         sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def split_corpus(path: Path, heldout_fraction: float) -> tuple[list[str], list[str]]:
    """(training lines, held-out lines): the non-empty lines, the last ``heldout_fraction`` held out."""
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    n_held = max(1, math.ceil(len(lines) * heldout_fraction))
    if len(lines) - n_held < 1:
        raise ConfigError(f"model.pretrain.corpus={path} has {len(lines)} non-empty lines: too few to hold some out.")
    return lines[:-n_held], lines[-n_held:]


def make_blocks(tokenizer, lines: list[str], max_length: int, objective: str) -> torch.Tensor:
    """Tokenized lines concatenated and cut into ``[n_blocks, max_length]`` (the tail dropped)."""
    stream: list[int] = []
    if objective == "mlm":
        for ids in tokenizer(lines, add_special_tokens=True, verbose=False)["input_ids"]:
            stream += ids
    else:
        for ids in tokenizer(lines, add_special_tokens=False, verbose=False)["input_ids"]:
            stream += ids + [tokenizer.eos_token_id]
    n_blocks = len(stream) // max_length
    if n_blocks == 0:
        raise ConfigError(f"the corpus yields {len(stream)} tokens, fewer than model.pretrain.max_length={max_length}.")
    return torch.tensor(stream[: n_blocks * max_length]).view(n_blocks, max_length)


def collator(tokenizer, objective: str, mlm_probability: float) -> DataCollatorForLanguageModeling:
    return DataCollatorForLanguageModeling(tokenizer, mlm=objective == "mlm", mlm_probability=mlm_probability)


def fixed_batches(blocks: torch.Tensor, collate, batch_size: int, seed: int) -> list[dict[str, torch.Tensor]]:
    """Held-out batches with masks drawn once from ``seed`` (the same positions every evaluation)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return [collate([{"input_ids": row} for row in blocks[i: i + batch_size]])
                for i in range(0, len(blocks), batch_size)]


@torch.no_grad()
def heldout_loss(model: torch.nn.Module, batches: list[dict[str, torch.Tensor]], objective: str) -> tuple[float, int]:
    """(mean cross-entropy over the scored tokens, their number) on ``batches``."""
    model.eval()
    total, count = 0.0, 0
    for batch in batches:
        labels = batch["labels"]
        # transformers averages over the batch's scored tokens; weight by them to average over all.
        n = int((labels[:, 1:] != -100).sum()) if objective == "clm" else int((labels != -100).sum())
        if n == 0:
            continue
        total += float(model(**batch).loss) * n
        count += n
    return total / max(count, 1), count


def build_pretraining_model(family: str, arch: dict[str, Any], tokenizer, seed: int) -> torch.nn.Module:
    """The ``tiny`` architecture with an LM head, randomly initialised from ``seed``."""
    overrides = {k: v for k, v in arch.items() if k not in ("vocab_size", "model_type")}
    model_type = arch.get("model_type", FAMILY_MODEL_TYPE[family])
    config = tiny_config(model_type, tokenizer, **overrides)
    torch.manual_seed(seed)
    auto = AutoModelForMaskedLM if objective_of(family) == "mlm" else AutoModelForCausalLM
    return auto.from_config(config)


def pretrained_checkpoint(
    name: str,
    family: str,
    arch: dict[str, Any],
    spec: PretrainSpec,
    cfg: Any,
    run_id: str,
) -> tuple[Path, str, dict[str, Any] | None]:
    """The pretrained folder for (architecture, settings, corpus): from the cache, or trained now.

    Args:
        name: the model config's name (``model`` column of the pretrain row).
        family: ``encoder`` or ``decoder``.
        arch: the model config's ``tiny:`` block (``model_type`` and config overrides).
        spec: the pretraining settings.
        cfg: the run config (``paths``, ``trainer``, ``resume``).
        run_id: the ``run_id`` of the pretrain row, should it be trained now.

    Returns:
        (folder, cache key, the stored row when it was trained now, else None).
    """
    job = _Job(name=name, family=family, arch=arch, spec=spec, objective=objective_of(family),
               corpus=spec.check_corpus())
    job.sha = file_digest(job.corpus)
    job.key = pretrain_key(family, arch, spec, job.sha)
    cache_dir = Path(cfg.paths.cache_dir) / "pretrained"
    cache_dir.mkdir(parents=True, exist_ok=True)
    final = cache_dir / job.key
    with FileLock(str(cache_dir / f"{job.key}.lock")):
        if (final / DONE_FILE).exists():
            info = json.loads((final / DONE_FILE).read_text())
            log.info("Pretrained model reused from cache %s (held-out %s loss %.3f)", final, job.objective,
                     info.get("heldout_nll", float("nan")))
            return final, job.key, None
        log.info("Pretrained model not in cache (key %s): pretraining (%s, %d steps) on %s",
                 job.key, job.objective, spec.max_steps, job.corpus)
        return final, job.key, _pretrain_and_store(job, cfg, run_id, final)


@dataclass
class _Job:
    """What one pretraining is: the model config's name, family and ``tiny:`` architecture, the
    settings, the objective, the corpus and (once read) its digest and the cache key."""

    name: str
    family: str
    arch: dict[str, Any]
    spec: PretrainSpec
    objective: str
    corpus: Path
    sha: str = ""
    key: str = ""


def _pretrain_and_store(job: _Job, cfg: Any, run_id: str, final: Path) -> dict[str, Any]:
    """Pretrain ``job`` into ``final`` (atomically) and store its ``task=pretrain`` row."""
    spec, family = job.spec, job.family
    run_dir = Path(cfg.paths.runs_dir) / f"{run_id}_{job.name}_pretrain"
    run_dir.mkdir(parents=True, exist_ok=True)
    params = {k: v for k, v in asdict(spec).items() if k not in ("lang", "val_every_n_steps")}
    row = identity_columns(
        run_id=run_id, config_hash=job.key, sweep_id=str(cfg.get("sweep_id") or ""), run_dir=run_dir,
        model=job.name, task="pretrain", lang=spec.lang, method=f"pretrain_{job.objective}", seed=spec.seed,
        **{f"method.{k}": v for k, v in params.items()}, **{"method.corpus_sha256": job.sha[:16]},
        main_metric="quality.ppl",  # the held-out perplexity of the pretraining objective
    )
    ckpt_dir = checkpoint_root(cfg) / f"pretrain-{job.key}"
    with run_record(Path(cfg.paths.db), run_dir, row) as row:
        started = time.time()
        train_lines, held_lines = split_corpus(job.corpus, spec.heldout_fraction)
        tokenizer = train_bpe_tokenizer(train_lines, family, spec.vocab_size, Path(cfg.paths.cache_dir) / "tokenizers",
                                        model_max_length=spec.max_length)
        L.seed_everything(spec.seed, workers=True, verbose=False)
        model = build_pretraining_model(family, job.arch, tokenizer, spec.seed)
        # The saved tokenizer admits what the model's positions do (not just the pretraining blocks),
        # so fine-tuning tasks may use longer inputs; XLM-R-class models reserve pad + 1 positions.
        positions = getattr(model.config, "n_positions", None) or model.config.max_position_embeddings - (
            model.config.pad_token_id + 1 if model.config.model_type in ("roberta", "xlm-roberta") else 0)
        tokenizer.model_max_length = int(positions)
        collate = collator(tokenizer, job.objective, spec.mlm_probability)
        train_blocks = make_blocks(tokenizer, train_lines, spec.max_length, job.objective)
        held_blocks = make_blocks(tokenizer, held_lines, spec.max_length, job.objective)
        if spec.max_heldout_blocks is not None:
            held_blocks = held_blocks[: spec.max_heldout_blocks]
        held = fixed_batches(held_blocks, collate, spec.batch_size, spec.seed + 1)
        log.info("Pretraining corpus: %d training lines -> %d blocks of %d tokens; %d held-out lines -> %d blocks",
                 len(train_lines), len(train_blocks), spec.max_length, len(held_lines), len(held_blocks))
        if spec.max_steps > 0:
            module = CompressionModule(model, None, lr=spec.lr, weight_decay=spec.weight_decay,
                                       warmup_ratio=spec.warmup_ratio, max_steps=spec.max_steps)
            trainer = make_trainer(cfg, run_dir, "pretrain", spec.max_steps, spec.val_every_n_steps, None,
                                   ckpt_dir if cfg.resume.enabled else None)
            train_loader = DataLoader([{"input_ids": b} for b in train_blocks], batch_size=spec.batch_size,
                                      shuffle=True, collate_fn=collate)
            trainer.fit(module, train_dataloaders=train_loader, val_dataloaders=DataLoader(held, batch_size=None),
                        ckpt_path=resumable_checkpoint(ckpt_dir) if cfg.resume.enabled else None, weights_only=True)
        nll, n_scored = heldout_loss(model, held, job.objective)
        row.update({"quality.nll": nll, "quality.ppl": math.exp(nll),
                    "eff.params": count_parameters(model)["eff.params"]})
        info = {"key": job.key, "objective": job.objective, "corpus": str(job.corpus), "corpus_sha256": job.sha,
                "train_lines": len(train_lines), "heldout_lines": len(held_lines),
                "train_tokens": int(train_blocks.numel()), "heldout_scored_tokens": n_scored,
                "heldout_nll": nll, "heldout_ppl": math.exp(nll), "spec": asdict(spec), "arch": job.arch,
                "train_time_s": time.time() - started, "created_at": utc_timestamp(), "run_id": run_id}
        save_checkpoint_atomically(final, model, tokenizer, DONE_FILE, info)
        row["status"] = "ok"
        log.info("Pretrained %s: held-out %s loss %.4f (ppl %.2f) over %d tokens; cached at %s",
                 job.name, job.objective, nll, math.exp(nll), n_scored, final)
    clear_checkpoints(ckpt_dir)  # reached only when ok: the checkpoint is cached now
    return row
