"""The fine-tuned teacher (the fp32 baseline), cached on disk and shared across a sweep.

The cache key is a hash of exactly what determines the teacher's weights: the model spec, the
task's data and training settings, the seed and the fine-tuning hyper-parameters. A sweep over
methods therefore fine-tunes once. A file lock per key makes parallel jobs that need the same
teacher wait for the one that trains it; the teacher is written to a temporary folder and
renamed into place, so nobody ever loads a half-written teacher.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any, Callable

from filelock import FileLock
from torch import nn

from compbench.errors import first_line_or_type

log = logging.getLogger(__name__)

#: Task fields that only affect evaluation, not the fine-tuned weights.
EVAL_ONLY_TASK_FIELDS = ("eval_batch_size", "max_eval_samples", "num_beams", "max_new_tokens", "stride",
                         "ppl_protocol")
DONE_FILE = "teacher.json"


def teacher_key(model_cfg: dict[str, Any], task_cfg: dict[str, Any], seed: int, finetune_cfg: dict[str, Any],
                data_fingerprint: str = "") -> str:
    """Hash (16 hex chars) of what determines the fine-tuned teacher: the config parts and the
    fingerprint of the data it is trained on (so edited files never reuse a stale teacher)."""
    task = {k: v for k, v in task_cfg.items() if k not in EVAL_ONLY_TASK_FIELDS}
    parts = {"model": model_cfg, "task": task, "seed": seed, "finetune": finetune_cfg}
    if data_fingerprint:
        parts["data"] = data_fingerprint
    payload = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def get_or_train_teacher(
    cache_dir: Path,
    key: str,
    train: Callable[[], tuple[nn.Module, dict[str, Any]]],
    load: Callable[[Path], nn.Module],
    tokenizer: Any,
) -> tuple[nn.Module, Path, bool, dict[str, Any]]:
    """Load the teacher for ``key`` from the cache, or train and cache it.

    Args:
        cache_dir: the teachers' cache directory.
        key: ``teacher_key(...)``.
        train: fine-tunes and returns (model, info dict for ``teacher.json``).
        load: loads a model from a cached directory.
        tokenizer: saved beside the teacher so the cached folder is a complete HF model.

    Returns:
        (teacher, its directory, whether it was reused, its info).
    """
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    final = cache_dir / key
    with FileLock(str(cache_dir / f"{key}.lock")):
        if (final / DONE_FILE).exists():
            try:
                info = json.loads((final / DONE_FILE).read_text())
                model = load(final)
            except Exception as exc:  # noqa: BLE001 - a damaged cache entry is retrained, never a dead end
                log.warning("Cached teacher %s is unreadable (%s); fine-tuning it again", final,
                            first_line_or_type(exc))
                shutil.rmtree(final, ignore_errors=True)
            else:
                log.info("Teacher reused from cache %s (fine-tuned %s, %.1f s then)", final, info.get("created_at"),
                         info.get("train_time_s", float("nan")))
                return model, final, True, info
        log.info("Teacher not in cache (key %s): fine-tuning it", key)
        start = time.time()
        model, info = train()
        info = {**info, "key": key, "train_time_s": time.time() - start,
                "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        save_checkpoint_atomically(final, model, tokenizer, DONE_FILE, info)
        log.info("Teacher cached at %s", final)
        return model, final, False, info


def save_checkpoint_atomically(final: Path, model, tokenizer, done_file: str, info: dict) -> None:
    """Write ``model`` (safetensors), ``tokenizer`` and ``info`` (as ``done_file``, the marker
    that the checkpoint is complete) under a temporary name, then rename it to ``final``: a
    killed write never leaves a folder that looks whole (teacher and pretraining caches)."""
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    (tmp / done_file).write_text(json.dumps(info, indent=2, default=str))
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
