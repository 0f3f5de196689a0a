"""Every config file composes, and every model × task pair builds or is refused clearly."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from compbench.configs import conf_dir
from compbench.configs import build_dataclass
from compbench.errors import ConfigError
from compbench.methods import build_methods
from compbench.training.plan import check_compatible

GROUPS = ["model", "task", "method", "trainer", "finetune", "evaluation", "logger", "paths", "experiment", "debug"]
CONFIG_FILES = sorted(p for g in GROUPS for p in (conf_dir() / g).glob("*.yaml"))


def compose_cfg(*overrides: str):
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=False)


def test_default_config_composes_and_resolves():
    cfg = compose_cfg()
    OmegaConf.resolve(cfg)
    assert cfg.model.name == "tiny_afriberta" and cfg.task.name == "smoke" and cfg.method.name == "none"


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_config_file_composes(path: Path):
    group = path.parent.name
    first_line = path.read_text().splitlines()[0]
    assert first_line.startswith("#"), f"{path} must open with a comment giving the command that uses it"
    override = f"{group}={path.stem}"
    extra = ["model.name_or_path=some/model"] if override == "model=hub" else []
    cfg = compose_cfg(override, *extra)
    container = OmegaConf.to_container(cfg, resolve=False)
    assert container
    if group == "method" and path.stem == "chain":
        with pytest.raises(ConfigError, match="needs at least one stage"):
            build_methods(cfg.method)  # the chain is filled by experiment files
    elif group == "method":
        assert build_methods(cfg.method)
    if group == "model":
        assert build_dataclass(cfg.model, "model").name
    if group == "task":
        task = build_dataclass(cfg.task, "task")
        assert task.kind in ("token_classification", "causal_lm", "summarization")


MODELS = sorted(p.stem for p in (conf_dir() / "model").glob("*.yaml") if p.stem != "hub")
TASKS = sorted(p.stem for p in (conf_dir() / "task").glob("*.yaml"))


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("task", TASKS)
def test_model_task_pair_builds_or_is_refused(model: str, task: str):
    cfg = compose_cfg(f"model={model}", f"task={task}", "task.data_dir=/nonexistent" if not task.startswith("smoke") else "task.source=synthetic")
    spec = build_dataclass(cfg.model, "model")
    task_obj = build_dataclass(cfg.task, "task")
    if spec.family in task_obj.supported_families:
        check_compatible(spec, spec.family, task_obj, conf_dir())  # does not raise
    else:
        with pytest.raises(ConfigError) as err:
            check_compatible(spec, spec.family, task_obj, conf_dir())
        message = str(err.value)
        assert f"task '{task_obj.name}'" in message and f"model '{spec.name}'" in message
        assert "compatible models:" in message and "\n" not in message


@pytest.mark.parametrize("model,task", [("tiny_afriberta", "smoke"), ("tiny_gpt2", "smoke"), ("tiny_gpt2", "smoke_lm"),
                                        ("tiny_bart", "smoke_summarization")])
def test_tiny_models_build_for_their_tasks(model, task, tmp_path):
    cfg = compose_cfg(f"model={model}", f"task={task}", "task.synthetic_sizes.train=50")
    spec = build_dataclass(cfg.model, "model")
    task_obj = build_dataclass(cfg.task, "task")
    tokenizer = spec.build_tokenizer(task_obj, tmp_path)
    task_obj.setup(tokenizer)
    model_obj = spec.build_model(task_obj, tokenizer, seed=0)
    batch = next(iter(task_obj.train_dataloader()))
    batch.pop("word_ids", None)
    out = model_obj(**batch)
    assert out.loss.isfinite()
    assert model_obj.config.vocab_size == len(tokenizer)


def test_unknown_task_parameter_is_refused_in_one_sentence():
    cfg = compose_cfg("+task.max_lenght=12")
    with pytest.raises(ConfigError, match=r"task 'smoke' has no parameter\(s\) max_lenght; its parameters are: .*max_length"):
        build_dataclass(cfg.task, "task")
