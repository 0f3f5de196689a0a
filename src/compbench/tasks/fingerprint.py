"""Data fingerprints: what a run actually read, so that cached teachers and "done" configs are
keyed by the data and not by a folder name.

A local split file is identified by the sha256 of its bytes. Hashing WikiText-103 (~500 MB)
takes seconds, so digests are cached in ``<cache_dir>/file_digests.json`` keyed by the file's
resolved path, size and modification time (ns): a re-run only ``stat``s its files, and an
edited file (new size or mtime) is hashed again. The fingerprint of a task is the hash of its
splits' digests by split name, so moving or renaming the data folder keeps the fingerprint
while editing one byte changes it.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from filelock import FileLock

DIGEST_CACHE = "file_digests.json"
_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_digest(path: str | Path, cache_dir: str | Path | None = None) -> str:
    """sha256 of ``path``, from the digest cache in ``cache_dir`` when size and mtime still match."""
    path = Path(path).resolve()
    stat = path.stat()
    if cache_dir is None:
        return sha256_file(path)
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    cache_file = cache_dir / DIGEST_CACHE
    key = str(path)
    stamp = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    with FileLock(str(cache_file) + ".lock"):
        try:
            cache = json.loads(cache_file.read_text())
        except (OSError, ValueError):  # absent or damaged: it is only a cache
            cache = {}
        entry = cache.get(key)
        if entry and entry.get("size") == stamp["size"] and entry.get("mtime_ns") == stamp["mtime_ns"]:
            return entry["sha256"]
        digest = sha256_file(path)
        cache[key] = {**stamp, "sha256": digest}
        tmp = cache_file.with_name(f"{cache_file.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache, indent=0, sort_keys=True))
        os.replace(tmp, cache_file)  # atomic: a killed run never leaves a half-written cache
        return digest


def combine(parts: dict[str, str]) -> str:
    """16 hex digits identifying a set of named digests (order of the dict does not matter)."""
    payload = json.dumps(parts, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


def examples_digest(examples: object) -> str:
    """sha256 of examples built in memory (synthetic data), via their canonical JSON."""
    payload = json.dumps(examples, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()
