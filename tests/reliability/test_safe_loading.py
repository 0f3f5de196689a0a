"""Loading never executes code from files: audited over the package source."""

from __future__ import annotations

import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "compbench"


def source_lines():
    for path in sorted(SRC.rglob("*.py")):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            code = line.split("#", 1)[0]
            if code.strip():
                yield path.relative_to(SRC), number, code


def test_torch_load_always_weights_only():
    calls = [(p, n, c) for p, n, c in source_lines() if re.search(r"\btorch\.load\(", c)]
    assert calls, "the audit found no torch.load at all: is SRC right?"
    unsafe = [(str(p), n) for p, n, c in calls if "weights_only=True" not in c]
    assert not unsafe, f"torch.load without weights_only=True: {unsafe}"


def test_no_pickle_and_no_unsafe_numpy_loading():
    bad = [(str(p), n, c.strip()) for p, n, c in source_lines()
           if re.search(r"\bpickle\.loads?\(|\bdill\.|allow_pickle\s*=\s*True|(?<![.\w])eval\(|(?<![.\w])exec\(", c)]
    assert not bad, bad


def test_trust_remote_code_is_never_switched_on_in_code():
    bad = [(str(p), n, c.strip()) for p, n, c in source_lines() if re.search(r"trust_remote_code\s*=\s*True", c)]
    assert not bad, bad
    from compbench.models.loader import ModelSpec

    assert ModelSpec(name_or_path="x").trust_remote_code is False


def test_weights_are_saved_as_safetensors():
    saves = [(str(p), n, c) for p, n, c in source_lines() if ".save_pretrained(" in c and "tok" not in c.lower()]
    unsafe = [(p, n) for p, n, c in saves if "safe_serialization=False" in c]
    assert not unsafe, unsafe


def test_model_configs_in_conf_do_not_trust_remote_code():
    conf = SRC.parents[1] / "conf" / "model"
    assert not [p.name for p in conf.glob("*.yaml") if re.search(r"trust_remote_code:\s*true", p.read_text())]
