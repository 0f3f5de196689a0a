"""The command-line preflight: valid commands pass untouched, mistakes get the nearest valid name."""

from __future__ import annotations

from pathlib import Path

import pytest

from compbench.preflight import check_command_line, nearest

CONF = Path(__file__).resolve().parents[1] / "conf"

VALID = [
    [],
    ["-m", "hydra/launcher=joblib", "method=none,kd"],
    ["+evaluation.ood.yor={lang: yor, data_dir: x}"],
    ["experiment=kd_then_qat"],
    ["task=masakhaner", "task.lang=yor"],
    ["~logger"],
    ["debug=fast"],
    ["logger=[csv,tensorboard]"],
    ["-m", "method=qat", "method.w_bits=4,8"],
    ["-m", "seed=range(0,3)"],
    ["hydra.run.dir=/tmp/x"],
    ["model=hub", "model.name_or_path=gpt2"],
    ["--help"],
    ["--cfg", "job", "method=prunning"],  # Hydra's own options: left to Hydra
]


@pytest.mark.parametrize("argv", VALID, ids=lambda a: " ".join(a) or "no-args")
def test_valid_command_lines_pass(argv, tmp_path):
    assert check_command_line([*argv, f"paths.output_dir={tmp_path}"] if "--cfg" not in argv else argv, CONF) is None


@pytest.mark.parametrize("argv, words", [
    (["method=prunning"], "did you mean prune_magnitude?"),
    (["method=prune_magnitude", "method.sparsty=0.5"], "did you mean method.sparsity=0.5?"),
    (["finetune.max_stesp=3"], "did you mean finetune.max_steps=3?"),
    (["-m", "method=none,prune_magnitude", "method.sparsity=0.5"], "with method=none"),
    (["model=hub"], "model.name_or_path has no value"),
])
def test_mistakes_get_one_sentence_with_the_fix(argv, words, tmp_path):
    message = check_command_line([*argv, f"paths.output_dir={tmp_path}"], CONF)
    assert message is not None and words in message
    assert "\n" not in message and "To append to your config" not in message
    assert "+method.sparsty" not in message  # no advice to add a misspelled key


def test_nearest_prefers_the_closest_option():
    options = ["chain", "kd", "none", "prune_magnitude", "prune_structured", "ptq_dynamic_int8", "qat"]
    assert nearest("prunning", options) == "prune_magnitude"
    assert nearest("zzz", options) is None
