"""Provenance of a run: the code (git sha, package version), the environment (library
versions, the lock file's hash) and the hardware it ran on.

The one home of these facts: ``provenance()`` gives the row's provenance columns
(``compbench.records.schema.IDENTITY_COLUMNS``), and ``hardware()`` / ``cpu_model()`` serve
benchmarks that print where they ran.
"""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
from pathlib import Path


def git_sha(repo_dir: Path) -> str:
    """HEAD of the git checkout holding ``repo_dir``, ``-dirty`` when tracked files changed.

    Untracked files do not make it dirty, as with ``git describe --dirty``: results/ and
    outputs/ are written inside the checkout by every run.
    """
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo_dir, capture_output=True, text=True, timeout=10
        )
        if sha.returncode != 0:
            return "unknown"
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=repo_dir, capture_output=True, text=True, timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    dirty = status.returncode != 0 or bool(status.stdout.strip())
    return sha.stdout.strip() + ("-dirty" if dirty else "")


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo where available)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def hardware() -> str:
    """A short description of the accelerator: GPU name and count, else CPU model and cores."""
    import torch

    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        return f"{torch.cuda.get_device_name(0)} x{count}"
    # Cores this process may use (a cgroup/affinity limit), not the host's total.
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{cpu_model()} ({cores} cores)"


#: The lock file of the checkout (exact versions of every dependency; constraints/update.sh).
LOCK_FILE = Path(__file__).resolve().parents[3] / "constraints" / "cpu.txt"


def lock_hash(lock_file: Path = LOCK_FILE) -> str:
    """The first 12 hex digits of the lock file's SHA-256, with ``+drift`` when an installed
    distribution's version differs from the lock (or a locked one is missing), so a row says
    whether it ran in the locked environment. ``unlocked`` without a lock file (a wheel install)."""
    from importlib import metadata

    try:
        text = lock_file.read_text(encoding="utf-8")
    except OSError:
        return "unlocked"
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    for line in text.splitlines():
        name, sep, version = line.strip().partition("==")
        if not sep or name.startswith("#"):
            continue
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            return f"{digest}+drift"
        if installed != version:
            return f"{digest}+drift"
    return digest


def provenance() -> dict[str, str]:
    """The provenance columns of a row: git sha, hardware, library versions and the lock's hash."""
    import torch
    import transformers

    import compbench

    return {
        "git_sha": git_sha(Path(compbench.__file__).resolve().parent),
        "hardware": hardware(),
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "compbench_version": compbench.__version__,
        "lock_hash": lock_hash(),
    }
