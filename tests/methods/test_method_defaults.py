"""Each method's defaults have one home: its YAML (``conf/method/<name>.yaml``, what a run
composes) and its dataclass (what Python code building the method gets) agree on every
parameter, so ``StructuredPruning()`` in a notebook is ``method=prune_structured`` on the command
line."""

from __future__ import annotations

import dataclasses

import pytest
from hydra.utils import get_class
from omegaconf import OmegaConf

from compbench.configs import conf_dir
from compbench.methods.distillation.contrastive import ContrastSettings
from compbench.methods.quantization.contrastive_qat import ContrastiveQAT

METHOD_FILES = sorted(p for p in (conf_dir() / "method").glob("*.yaml") if "_target_" in OmegaConf.load(p))


def _default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


@pytest.mark.parametrize("path", METHOD_FILES, ids=lambda p: p.stem)
def test_yaml_and_dataclass_defaults_agree(path):
    raw = OmegaConf.load(path)
    cls = get_class(raw._target_)
    # Resolved as a run without model-specific budgets would (``${oc.select:model.x,default}``).
    yaml = OmegaConf.to_container(OmegaConf.create({"model": {}, "method": raw}), resolve=True)["method"]
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    assert set(yaml) - {"_target_"} <= set(fields), f"{path.name} sets keys that are not parameters"
    differing = {k: (v, _default(fields[k])) for k, v in yaml.items()
                 if k != "_target_" and _plain(v) != _plain(_default(fields[k]))}
    assert not differing, f"{path.name} (yaml, dataclass): {differing}"
    assert not [n for n in fields if n not in yaml], f"{path.name} leaves parameters undocumented"


def test_contrastive_settings_are_the_methods_defaults():
    method, settings = ContrastiveQAT(), ContrastSettings()
    assert (method.negatives, method.negative_source, method.positive, method.contrastive_temperature,
            method.token_reduction, method.num_random_negatives) == (
        settings.negatives, settings.negative_source, settings.positive, settings.temperature,
        settings.token_reduction, settings.num_random_negatives)
