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

from compbench.errors import ConfigError, first_line, first_line_or_type

log = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")

#: Called with (logits [N, C], labels [N]) of every scored position during evaluation, so that
#: calibration statistics can be gathered in the same pass as the quality metric. A task that
#: computes ``log_softmax(logits)`` for its own metric (the LM task's NLL) also passes it as the
#: keyword ``log_probs=``, so callbacks take ``log_probs=None`` (and may reuse it).
LogitsCallback = Callable[..., None]


@dataclass
class Task(ABC):
    """Base of all tasks. Subclasses set ``kind``, ``supported_families`` and the readers."""

    name: str = "task"
    source: str = "auto"
    data_dir: str | None = None
    #: Used as ``data_dir`` when that is null and this folder exists (the task YAMLs point it at
    #: ``${paths.data_root}/<task>/<lang>``), so real data beside the checkout needs no flag.
    default_data_dir: str | None = None
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
    #: ``(column, relative|difference)`` that ``robust.*.drop`` is computed on; None = the
    #: relative change of ``main_metric``.
    robust_drop: ClassVar[tuple[str, str] | None] = None
    supported_families: ClassVar[tuple[str, ...]] = ()
    local_suffixes: ClassVar[tuple[str, ...]] = (".txt",)

    def __post_init__(self) -> None:
        if (self.data_dir is None and self.default_data_dir and self.source in ("auto", "local")
                and Path(self.default_data_dir).is_dir()):
            log.info("task.data_dir not set: reading %s (task.default_data_dir)", self.default_data_dir)
            self.data_dir = self.default_data_dir
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
        #: Digest of each split's data as read (file sha256, hub fingerprint); see ``fingerprint``.
        self.split_digests: dict[str, str] = {}
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
        elif self.source == "hub" and not Path(str(self.hub_dataset)).exists():
            from compbench.hub import hub_reachable, offline_requested

            # With HF_DATASETS_OFFLINE=1 the user asks for the local cache: datasets answers that itself.
            if not offline_requested() and not hub_reachable():
                raise ConfigError(
                    f"task '{self.name}' would download the hub dataset {self.hub_dataset!r}, but the Hugging Face "
                    f"Hub is unreachable; set task.data_dir=<folder with the {self.name} split files>"
                    + (f" (there is no folder at task.default_data_dir={self.default_data_dir})."
                       if self.default_data_dir else ".")
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
                    splits[split] = self._read_checked(path)
                    self.provenance[split] = str(path)
            self._derive_missing(splits)
        else:
            splits = self._load_hub()
        for split, examples in splits.items():
            self.validate_examples(split, examples)
        for split in ("validation", "test"):
            if self.max_eval_samples is not None:
                splits[split] = splits[split][: self.max_eval_samples]
        if self.max_train_samples is not None:
            splits["train"] = splits["train"][: self.max_train_samples]
        for split in SPLITS:
            log.info("Task %s %s: %d examples from %s", self.name, split, len(splits[split]), self.provenance[split])
        self.splits = splits
        return splits

    def _read_checked(self, path: Path) -> list[Any]:
        """``read_local(path)``, with undecodable bytes and malformed lines as one sentence."""
        try:
            return self.read_local(path)
        except UnicodeDecodeError as exc:
            raise ConfigError(
                f"{path} is not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start}); "
                f"convert it, e.g. iconv -f latin1 -t utf-8 {path.name} > {path.name}.utf8."
            ) from exc
        except ValueError as exc:  # the readers' messages name file and line
            raise ConfigError(f"{first_line(exc).rstrip('.')}; fix that line of the file.") from exc

    def validate_examples(self, split: str, examples: list[Any]) -> None:
        """Refuse examples the task cannot use (e.g. NER tags outside ``labels``); default: all fine."""

    def _split_for_derivation(self, examples: list[Any], cut: float) -> tuple[list[Any], list[Any], str]:
        """Cut ``examples`` into (first ``cut``, rest) and say how.

        By examples when there are at least two; a corpus read as one stream (``doc_split:
        none``, PTB) is one document, so it is cut by lines, and a single line by words, each
        side staying one stream. Returns ([], [], reason) when nothing can be cut.
        """
        if len(examples) >= 2:
            k = min(max(1, int(len(examples) * cut)), len(examples) - 1)
            return examples[:k], examples[k:], f"{len(examples)} examples"
        if len(examples) == 1 and isinstance(examples[0], str):
            for unit, parts, sep in (("lines", [l for l in examples[0].split("\n") if l.strip()], "\n"),
                                     ("words", examples[0].split(), " ")):
                if len(parts) >= 2:
                    k = min(max(1, int(len(parts) * cut)), len(parts) - 1)
                    return [sep.join(parts[:k])], [sep.join(parts[k:])], f"{len(parts)} {unit} of one stream"
        return [], [], f"{len(examples)} example(s)"

    def _derive_missing(self, splits: dict[str, list[Any]]) -> None:
        cut = self.derive_fraction
        for absent, source in (("train", "validation"), ("validation", "train")):
            if absent not in splits and source in splits:
                src = self.provenance[source]
                first, rest, unit = self._split_for_derivation(splits[source], cut)
                if not first:
                    raise ConfigError(
                        f"task '{self.name}' has no {absent} split and cannot derive one from {src}, which holds "
                        f"only {unit}; add a {absent} file to task.data_dir={self.data_dir}."
                    )
                splits["train"], splits["validation"] = first, rest
                self.provenance["train"] = f"derived: first {cut:.0%} of {unit} in {src}"
                self.provenance["validation"] = f"derived: last {1 - cut:.0%} of {unit} in {src}"
                self.provenance[absent] += f" (no {absent} file in data_dir)"
                log.info("Task %s: no %s split; derived train/validation %.0f/%.0f from %s of %s",
                         self.name, absent, 100 * cut, 100 * (1 - cut), unit, src)
                break
        missing = [s for s in SPLITS if s not in splits or not splits[s]]
        if missing:
            where = f"task.data_dir={self.data_dir}" if self.source == "local" else f"hub dataset {self.hub_dataset}"
            split = missing[0]
            source = self.provenance.get(split, "")
            what = f"{source} holds no examples (empty or only whitespace)" if source else f"{where} has no {split} split"
            raise ConfigError(f"{what}; point task.data_dir at a folder whose {split} file has examples.")

    def _load_hub(self) -> dict[str, list[Any]]:
        ds = self._hub_dataset()
        names = {"train": ("train",), "validation": ("validation", "dev", "valid"), "test": ("test",)}
        splits = {}
        for split, candidates in names.items():
            for cand in candidates:
                if cand in ds:
                    splits[split] = [self.read_hub_row(row) for row in ds[cand]]
                    self.provenance[split] = f"hub {self.hub_dataset}/{self.hub_config or ''}:{cand}"
                    self.split_digests[split] = hub_split_digest(ds[cand])
                    break
        self._derive_missing(splits)
        return splits

    def _hub_dataset(self):
        """``datasets.load_dataset(hub_dataset, hub_config)``, its failures as one sentence."""
        import datasets

        try:
            return datasets.load_dataset(self.hub_dataset, self.hub_config)
        except (ConnectionError, OSError, ValueError) as exc:
            raise ConfigError(
                f"cannot load the hub dataset {self.hub_dataset!r} ({first_line_or_type(exc).rstrip('.')}); "
                f"set task.data_dir=<folder with the {self.name} split files> to read local files."
            ) from exc

    def fingerprint(self, cache_dir: Path | None = None) -> str:
        """16 hex digits identifying the data this task reads (see ``compbench.tasks.fingerprint``).

        Local files: their content sha256 (cached by path, size and mtime in ``cache_dir``);
        hub data: the ``datasets`` fingerprint of each split, which follows the resolved
        revision and data files; synthetic data: the generated examples.
        """
        from compbench.tasks.fingerprint import combine, examples_digest, file_digest

        if self.source == "local":
            self.check_data()
            parts = {}
            for split in SPLITS:
                path = self._find(Path(self.data_dir), split)
                if path is not None:
                    parts[split] = file_digest(path, cache_dir)
            return combine({"source": "local", **parts})
        splits = self.load()
        if self.source == "synthetic":
            return combine({"source": "synthetic", **{s: examples_digest(splits[s]) for s in SPLITS}})
        return combine({"source": "hub", **self.split_digests})

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

    #: Whether ``evaluate`` writes predictions that ``saved_predictions`` reads back.
    has_saved_predictions: ClassVar[bool] = False

    def saved_predictions(self, run_dir: Path, split: str = "test") -> tuple[list[Any], list[Any]]:
        """(predictions, references) that ``evaluate(model, run_dir, split)`` saved."""
        raise ConfigError(f"the {self.kind} task does not save text predictions.")

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


def hub_split_digest(split_dataset: Any) -> str:
    """The ``datasets`` library's fingerprint of a loaded split (its cache identity)."""
    return str(getattr(split_dataset, "_fingerprint", "") or "")
