"""``method=[a,b]`` on the command line becomes ``method.stages`` where the config is composed;
building the methods then needs nothing but the config (no Hydra global state, no files)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from compbench.errors import ConfigError
from compbench.methods import build_methods, chain_as_stages, chain_names

CONF = Path(__file__).resolve().parents[2] / "conf"


def composed(*overrides: str):
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        return compose(config_name="config", overrides=list(overrides))


def test_chain_names_reads_a_list_selection_only():
    assert chain_names(["model=tiny_gpt2", "method=[prune_magnitude,ptq_dynamic_int8]"]) == [
        "prune_magnitude", "ptq_dynamic_int8"]
    assert chain_names(["method=qat", "method.w_bits=4"]) is None
    assert chain_names(["method=[qat]"]) is None  # a one-element list is the method itself
    assert chain_names([]) is None


def test_a_list_selection_becomes_stages_with_command_line_values():
    overrides = ["method=[prune_magnitude,ptq_dynamic_int8]", "method.sparsity=0.7"]
    cfg = composed(*overrides)
    method_cfg = chain_as_stages(cfg.method, chain_names(overrides), CONF / "method")
    assert list(method_cfg.stages) == ["prune_magnitude", "ptq_dynamic_int8"]
    methods = build_methods(method_cfg)
    assert [m.name for m in methods] == ["prune_magnitude", "ptq_dynamic_int8"]
    assert methods[0].sparsity == 0.7
    # Each stage has exactly its own file's keys: nothing of the other stage leaks in.
    assert "sparsity" not in method_cfg.stages.ptq_dynamic_int8


def test_a_parameter_of_several_stages_is_refused_in_one_sentence():
    overrides = ["method=[qat,ptq_weight_only]"]
    with pytest.raises(ConfigError, match=r"ambiguous: parameter\(s\) .*w_bits.* experiment file"):
        chain_as_stages(composed(*overrides).method, chain_names(overrides), CONF / "method")


def test_an_unknown_stage_names_the_choices():
    with pytest.raises(ConfigError, match="no config .* choose from .*prune_magnitude"):
        chain_as_stages(composed().method, ["prune_magnitud", "ptq_dynamic_int8"], CONF / "method")
