"""The task contract: data for three splits, a model class, batches, and an evaluation.

A task config (``conf/task/<name>.yaml``) names a Task subclass by ``_target_``. Data comes
from one of three sources, chosen by ``source``:

- ``local``: files in ``data_dir`` (formats in ``compbench.tasks.readers``);
- ``hub``: ``datasets.load_dataset(hub_dataset, hub_config)`` (users with hub access; the same
  code path also loads a local dataset directory, which is how it is tested offline);
- ``synthetic``: the built-in smoke benchmark (``compbench.tasks.synthetic``).

``source: auto`` picks ``local`` when ``data_dir`` is set, else ``hub``.
"""

from __future__ import annotations

import copy
import logging
import random
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

import torch
from torch.utils.data import DataLoader

from compbench.errors import ConfigError

log = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")

#: Called with (logits [N, C], labels [N]) of every scored position during evaluation, so that
#: calibration statistics can be gathered in the same pass as the quality metric.
LogitsCallback = Callable[[torch.Tensor, torch.Tensor], None]


@dataclass
class Task(ABC):
    """Base of all tasks. Subclasses set ``kind``, ``supported_families`` and the readers."""

    name: str = "task"
    source: str = "auto"
    data_dir: str | None = None
    hub_dataset: str | None = None
    hub_config: str | None = None
    lang: str | None = None
    max_length: int = 128
    batch_size: int = 16
    eval_batch_size: int = 32
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    #: When the local data has no train split, the first ``derive_fraction`` of the validation
    #: examples become train and the rest stay validation (and vice versa for a missing
    #: validation split, taken from the end of train).
    derive_fraction: float = 0.9
    synthetic_sizes: dict[str, int] = field(default_factory=lambda: {"train": 2000, "validation": 200, "test": 200})
    #: How the splits were obtained (filled by ``load``, written to the log and the record).
    provenance: dict[str, str] = field(default_factory=dict)

    kind: ClassVar[str] = ""
    #: The quality column robustness drops and sweeps optimise.
    main_metric: ClassVar[str] = ""
    supported_families: ClassVar[tuple[str, ...]] = ()
    local_suffixes: ClassVar[tuple[str, ...]] = (".txt",)

    def __post_init__(self) -> None:
        if self.source == "auto":
            self.source = "local" if self.data_dir else "hub"
        if self.source not in ("local", "hub", "synthetic"):
            raise ConfigError(f"task.source={self.source!r} is not one of auto, local, hub, synthetic.")
        if self.source == "local" and not self.data_dir:
            raise ConfigError(f"task '{self.name}' has source=local but no task.data_dir; set task.data_dir=<folder>.")
        if self.source == "hub" and not self.hub_dataset:
            raise ConfigError(
                f"task '{self.name}' has no hub dataset; set task.data_dir=<folder> to read local files."
            )
        if not 0 < self.derive_fraction < 1:
            raise ConfigError(f"task.derive_fraction must be in (0, 1), got {self.derive_fraction}.")
        self.splits: dict[str, list[Any]] = {}
        self.features: dict[str, Any] = {}
        self.tokenizer = None

    # ------------------------------------------------------------------ data loading
    def check_data(self) -> None:
        """Fail fast, before any model is built, if the data cannot be found."""
        if self.source == "local":
            data_dir = Path(self.data_dir)
            if not data_dir.is_dir():
                raise ConfigError(f"task.data_dir={data_dir} does not exist; point it at a folder with the {self.name} files.")
            if self._find(data_dir, "test") is None:
                raise ConfigError(
                    f"task.data_dir={data_dir} has no test split (expected e.g. test{self.local_suffixes[0]})."
                )

    def _find(self, data_dir: Path, split: str) -> Path | None:
        from compbench.tasks.readers import find_split_file

        return find_split_file(data_dir, split, self.local_suffixes)

    def load(self) -> dict[str, list[Any]]:
        """Read the three splits (raw examples), deriving a missing train/validation split."""
        if self.splits:
            return self.splits
        self.check_data()
        if self.source == "synthetic":
            splits = {s: self.read_synthetic(s, self.synthetic_sizes[s]) for s in SPLITS}
            self.provenance = {s: "synthetic smoke data" for s in splits}
        elif self.source == "local":
            splits = {}
            for split in SPLITS:
                path = self._find(Path(self.data_dir), split)
                if path is not None:
                    splits[split] = self.read_local(path)
                    self.provenance[split] = str(path)
            self._derive_missing(splits)
        else:
            splits = self._load_hub()
        for split in ("validation", "test"):
            if self.max_eval_samples is not None:
                splits[split] = splits[split][: self.max_eval_samples]
        if self.max_train_samples is not None:
            splits["train"] = splits["train"][: self.max_train_samples]
        for split in SPLITS:
            log.info("Task %s %s: %d examples from %s", self.name, split, len(splits[split]), self.provenance[split])
        self.splits = splits
        return splits

    def _derive_missing(self, splits: dict[str, list[Any]]) -> None:
        cut = self.derive_fraction
        for absent, source in (("train", "validation"), ("validation", "train")):
            if absent not in splits and source in splits:
                full, src = splits[source], self.provenance[source]
                k = max(1, int(len(full) * cut))
                splits["train"], splits["validation"] = full[:k], full[k:]
                self.provenance["train"] = f"derived: first {cut:.0%} of {src}"
                self.provenance["validation"] = f"derived: last {1 - cut:.0%} of {src}"
                self.provenance[absent] += f" (no {absent} file in data_dir)"
                break
        missing = [s for s in SPLITS if s not in splits or not splits[s]]
        if missing:
            raise ConfigError(f"task.data_dir={self.data_dir} yields no {', '.join(missing)} examples; check its files.")

    def _load_hub(self) -> dict[str, list[Any]]:
        import datasets

        ds = datasets.load_dataset(self.hub_dataset, self.hub_config)
        names = {"train": ("train",), "validation": ("validation", "dev", "valid"), "test": ("test",)}
        splits = {}
        for split, candidates in names.items():
            for cand in candidates:
                if cand in ds:
                    splits[split] = [self.read_hub_row(row) for row in ds[cand]]
                    self.provenance[split] = f"hub {self.hub_dataset}/{self.hub_config or ''}:{cand}"
                    break
        self._derive_missing(splits)
        return splits

    # ------------------------------------------------------------------ to implement
    @abstractmethod
    def read_local(self, path: Path) -> list[Any]:
        ...

    @abstractmethod
    def read_hub_row(self, row: dict[str, Any]) -> Any:
        ...

    @abstractmethod
    def read_synthetic(self, split: str, n: int) -> list[Any]:
        ...

    @abstractmethod
    def training_texts(self) -> list[str]:
        """Text of the train split, for training a tiny model's tokenizer."""
        ...

    def setup(self, tokenizer) -> None:
        """Tokenize every split for ``tokenizer``."""
        self.tokenizer = tokenizer
        for split in self.load():
            self.features[split] = self.encode_split(split)

    @abstractmethod
    def encode_split(self, split: str) -> Any:
        """Tokenized features of one split (stored in ``self.features[split]``)."""
        ...

    @abstractmethod
    def perturb_example(self, example: Any, perturbation: Any, rng: random.Random) -> Any:
        """The example with its *inputs* perturbed (labels kept aligned; references untouched)."""
        ...

    def with_test_examples(self, examples: list[Any], label: str = "") -> "Task":
        """A copy of this (set-up) task whose test split is ``examples``, tokenized; ``label``
        names them in log messages (``perturbation char_swap``, ``OOD yor``)."""
        clone = copy.copy(self)
        clone.test_label = label
        clone.splits = {**self.splits, "test": list(examples)}
        clone.features = dict(self.features)
        clone.features["test"] = clone.encode_split("test")
        return clone

    def split_label(self, split: str) -> str:
        """``split`` as log messages name it: ``test``, ``test (perturbation char_swap)``."""
        label = getattr(self, "test_label", "") if split == "test" else ""
        return f"{split} ({label})" if label else split

    def dev_logits(self, model: torch.nn.Module, on_logits: LogitsCallback) -> None:
        """Feed (logits, labels) of the validation split to ``on_logits`` (temperature fitting)."""
        self.evaluate(model, None, "validation", on_logits)

    @abstractmethod
    def auto_model_class(self):
        """The transformers ``AutoModelFor...`` class of this task kind."""
        ...

    def model_kwargs(self) -> dict[str, Any]:
        """Extra ``from_pretrained``/``from_config`` kwargs (e.g. ``num_labels``)."""
        return {}

    @abstractmethod
    def dataloader(self, split: str, shuffle: bool = False) -> DataLoader:
        ...

    @abstractmethod
    def evaluate(
        self, model: torch.nn.Module, out_dir: Path | None, split: str = "test",
        on_logits: LogitsCallback | None = None,
    ) -> dict[str, float]:
        """Quality metrics (``quality.*``) of ``model`` on ``split``; writes predictions to ``out_dir``."""
        ...

    # ------------------------------------------------------------------ conveniences
    def train_dataloader(self) -> DataLoader:
        return self.dataloader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self.dataloader("validation")

    def test_dataloader(self) -> DataLoader:
        return self.dataloader("test")

    @property
    def row_lang(self) -> str:
        return self.lang or ""


def model_device(model: torch.nn.Module) -> torch.device:
    """Device of the model's first parameter or buffer (CPU for parameter-free models)."""
    for tensor in list(model.parameters()) + list(model.buffers()):
        return tensor.device
    return torch.device("cpu")


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
