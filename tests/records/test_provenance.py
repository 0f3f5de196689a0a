"""Provenance: git sha, hardware, library versions and the lock file's hash."""

import re
import subprocess
from pathlib import Path

import torch

import compbench
from compbench.records.provenance import LOCK_FILE, git_sha, hardware, lock_hash, provenance


def test_provenance_reports_this_checkout():
    info = provenance()
    assert info["torch_version"] == torch.__version__
    assert info["compbench_version"] == compbench.__version__
    assert info["hardware"]
    package_dir = Path(compbench.__file__).resolve().parent
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=package_dir, capture_output=True, text=True)
    if head.returncode == 0:
        assert info["git_sha"].removesuffix("-dirty") == head.stdout.strip()
    else:
        assert info["git_sha"] == "unknown"


def test_git_sha_outside_a_checkout_is_unknown(tmp_path):
    assert git_sha(tmp_path) == "unknown"


def test_git_sha_marks_dirty_tree(tmp_path):
    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "f.txt").write_text("a")
    git("add", "f.txt")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "init")
    clean = git_sha(tmp_path)
    assert re.fullmatch(r"[0-9a-f]{40}", clean)
    (tmp_path / "untracked.txt").write_text("results do not make it dirty")
    assert git_sha(tmp_path) == clean
    (tmp_path / "f.txt").write_text("b")
    assert git_sha(tmp_path) == clean + "-dirty"


def test_lock_hash_is_the_lock_files_sha256_and_flags_drift(tmp_path):
    import hashlib
    from importlib import metadata

    lock = tmp_path / "cpu.txt"
    lock.write_text(f"# a comment\ntorch=={metadata.version('torch')}\nnumpy=={metadata.version('numpy')}\n")
    assert lock_hash(lock) == hashlib.sha256(lock.read_bytes()).hexdigest()[:12]
    lock.write_text(f"torch=={metadata.version('torch')}\nnumpy==0.0.1\n")
    assert lock_hash(lock) == hashlib.sha256(lock.read_bytes()).hexdigest()[:12] + "+drift"
    lock.write_text("a-package-that-is-not-installed==1.0\n")
    assert lock_hash(lock).endswith("+drift")
    assert lock_hash(tmp_path / "missing.txt") == "unlocked"


def test_the_checkouts_lock_pins_every_installed_dependency_of_compbench():
    """The lock file lists every distribution compbench requires, at an exact version."""
    from importlib import metadata

    locked = {re.sub(r"[-_.]+", "-", line.split("==")[0]).lower()
              for line in LOCK_FILE.read_text().splitlines() if "==" in line and not line.startswith("#")}
    required = {re.sub(r"[-_.]+", "-", re.split(r"[ ;<>=!~\[]", req)[0]).lower()
                for req in metadata.requires("compbench") or [] if "extra ==" not in req}
    assert required <= locked, f"not in {LOCK_FILE}: {sorted(required - locked)}; run constraints/update.sh"


def test_hardware_names_the_machine():
    text = hardware()
    assert text and (("cores" in text) or torch.cuda.is_available())
    assert provenance()["hardware"] == text
