"""Seeded perturbations of test inputs, and the ``robust.*`` columns built from their scores.

Every perturbation works on a list of words (NER tokens, or the whitespace words of a text) and
keeps NER labels aligned. What ``rate`` means:

* character noise (``char_swap``, ``char_delete``, ``char_insert``, ``char_substitute``) and
  ``random_case``: the probability that each *character* is hit (a character is a base letter
  with its combining marks, so a Yoruba tone mark is never split from its vowel);
* word operations (``word_drop``, ``lowercase``, ``uppercase``, ``strip_diacritics``): the
  probability that each *word* is hit (``rate=1`` transforms every word).

A rate of 0 returns the input unchanged. Character noise never empties a word and
``word_drop`` keeps at least one word per sentence (or text line), so no example disappears.

The pipeline reads a list of ``{name, rate}`` (optionally ``id``, the column name, when the same
perturbation appears twice) from the task YAML::

    robustness:
      - {name: char_swap, rate: 0.05}
      - {name: strip_diacritics, rate: 1.0}

and evaluates each on the test set, every example perturbed with its own :func:`example_rng`
(:meth:`Perturbation.apply` on words and labels, :meth:`Perturbation.apply_text` on text), then merges
:func:`robustness_summary` into the row (and :func:`ood_columns` for out-of-distribution test
sets): every ``robust.*`` column is built in this module.
"""

from __future__ import annotations

import math
import random
import string
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from compbench.errors import ConfigError

#: Characters drawn by ``char_insert`` / ``char_substitute`` (case then follows the replaced letter).
ALPHABET = string.ascii_lowercase

Tokens = list[str]
Labels = list[str] | None
WordOp = Callable[[Tokens, Labels, float, random.Random], tuple[Tokens, Labels]]


# ------------------------------------------------------------------------------ helpers
def _characters(word: str) -> list[str]:
    """Split a word into base characters with their combining marks attached.

    Enough for the tone and dot-below marks of Yoruba, Igbo or Hausa text without a grapheme
    library (``unicodedata`` is in the standard library; full UAX #29 clusters are not needed).
    """
    chars: list[str] = []
    for ch in unicodedata.normalize("NFD", word):
        if chars and unicodedata.combining(ch):
            chars[-1] += ch
        else:
            chars.append(ch)
    return [unicodedata.normalize("NFC", c) for c in chars]


def _random_letter(rng: random.Random, like: str | None = None, avoid: str | None = None) -> str:
    letter = rng.choice(ALPHABET)
    while avoid is not None and letter == avoid.lower():
        letter = rng.choice(ALPHABET)
    return letter.upper() if like is not None and like[:1].isupper() else letter


def _map_chars(word: str, rate: float, rng: random.Random, op: Callable[[list[str], int, random.Random], None]) -> str:
    """Apply ``op(chars, i, rng)`` to each character chosen with probability ``rate``; never empty."""
    if rate <= 0:
        return word
    chars = _characters(word)
    original = list(chars)
    hit = False
    for i in range(len(chars) - 1, -1, -1):  # right to left: edits never shift unvisited positions
        if rng.random() < rate:
            op(chars, i, rng)
            hit = True
    if not hit:
        return word  # untouched words keep their exact code points (no renormalisation)
    if not chars:
        chars = [rng.choice(original)]
    return "".join(chars)


def _per_word(tokens: Tokens, labels: Labels, rate: float, rng: random.Random, transform: Callable[[str], str]):
    if rate <= 0:
        return list(tokens), None if labels is None else list(labels)
    out = [transform(t) if rng.random() < rate else t for t in tokens]
    return out, None if labels is None else list(labels)


def _per_char(tokens: Tokens, labels: Labels, rate: float, rng: random.Random, op):
    out = [_map_chars(t, rate, rng, op) for t in tokens]
    return out, None if labels is None else list(labels)


# ------------------------------------------------------------------------------ character noise
def _swap(chars: list[str], i: int, rng: random.Random) -> None:
    if i + 1 < len(chars):
        chars[i], chars[i + 1] = chars[i + 1], chars[i]


def _delete(chars: list[str], i: int, rng: random.Random) -> None:
    del chars[i]


def _insert(chars: list[str], i: int, rng: random.Random) -> None:
    chars.insert(i + 1, _random_letter(rng, like=chars[i]))


def _substitute(chars: list[str], i: int, rng: random.Random) -> None:
    chars[i] = _random_letter(rng, like=chars[i], avoid=chars[i])


def _flip_case(chars: list[str], i: int, rng: random.Random) -> None:
    chars[i] = chars[i].swapcase()


def char_swap(tokens: Tokens, labels: Labels, rate: float, rng: random.Random):
    """Swap a character with the next one (per character)."""
    return _per_char(tokens, labels, rate, rng, _swap)


def char_delete(tokens: Tokens, labels: Labels, rate: float, rng: random.Random):
    """Delete characters (per character); a word keeps at least one of its characters."""
    return _per_char(tokens, labels, rate, rng, _delete)


def char_insert(tokens: Tokens, labels: Labels, rate: float, rng: random.Random):
    """Insert a random letter after a character (per character)."""
    return _per_char(tokens, labels, rate, rng, _insert)


def char_substitute(tokens: Tokens, labels: Labels, rate: float, rng: random.Random):
    """Replace a character by a different random letter (per character)."""
    return _per_char(tokens, labels, rate, rng, _substitute)


def random_case(tokens: Tokens, labels: Labels, rate: float, rng: random.Random):
    """Flip the case of characters (per character)."""
    return _per_char(tokens, labels, rate, rng, _flip_case)


# ------------------------------------------------------------------------------ word operations
def lowercase(tokens: Tokens, labels: Labels, rate: float, rng: random.Random):
    """Lower-case words (per word)."""
    return _per_word(tokens, labels, rate, rng, str.lower)


def uppercase(tokens: Tokens, labels: Labels, rate: float, rng: random.Random):
    """Upper-case words (per word)."""
    return _per_word(tokens, labels, rate, rng, str.upper)


def remove_diacritics(word: str) -> str:
    """Drop combining marks after NFD decomposition ("Ọ̀jọ̀gbọ́n" -> "Ojogbon"); never empties a word."""
    stripped = "".join(ch for ch in unicodedata.normalize("NFD", word) if not unicodedata.combining(ch))
    return unicodedata.normalize("NFC", stripped) or word


def strip_diacritics(tokens: Tokens, labels: Labels, rate: float, rng: random.Random):
    """Remove tone marks and other diacritics (per word)."""
    return _per_word(tokens, labels, rate, rng, remove_diacritics)


def word_drop(tokens: Tokens, labels: Labels, rate: float, rng: random.Random):
    """Drop words with their labels (per word), keeping at least one word.

    Labels are IOB2: when the start of an entity is dropped, its first kept ``I-X`` becomes
    ``B-X``, so the rest of the entity stays one well-formed gold entity and is not merged into
    a neighbour.
    """
    if rate <= 0 or not tokens:
        return list(tokens), None if labels is None else list(labels)
    keep = [rng.random() >= rate for _ in tokens]
    if not any(keep):
        keep[rng.randrange(len(tokens))] = True
    out_tokens = [t for t, k in zip(tokens, keep) if k]
    if labels is None:
        return out_tokens, None
    out_labels = []
    entity_type, kept_in_entity, dropped_in_entity = None, False, False
    for label, kept in zip(labels, keep):
        if not (label.startswith("I-") and label[2:] == entity_type):  # a new entity (or O) starts
            entity_type = label[2:] if label[:2] in ("B-", "I-") else None
            kept_in_entity = dropped_in_entity = False
        if not kept:
            dropped_in_entity = True
            continue
        if label.startswith("I-") and dropped_in_entity and not kept_in_entity:
            label = "B-" + label[2:]
        kept_in_entity = True
        out_labels.append(label)
    return out_tokens, out_labels


#: Perturbations by config name.
PERTURBATIONS: dict[str, WordOp] = {
    "char_swap": char_swap,
    "char_delete": char_delete,
    "char_insert": char_insert,
    "char_substitute": char_substitute,
    "random_case": random_case,
    "lowercase": lowercase,
    "uppercase": uppercase,
    "strip_diacritics": strip_diacritics,
    "word_drop": word_drop,
}


# ------------------------------------------------------------------------------ config objects
@dataclass(frozen=True)
class Perturbation:
    """One configured perturbation.

    Attributes:
        name: a key of :data:`PERTURBATIONS`.
        rate: probability per character or per word (see the module docstring), in [0, 1].
        id: column name part (``robust.<id>.<metric>``); defaults to ``name``.
    """

    name: str
    rate: float
    id: str = ""

    def __post_init__(self) -> None:
        if self.name not in PERTURBATIONS:
            raise ConfigError(
                f"unknown perturbation {self.name!r}; choose one of: {', '.join(sorted(PERTURBATIONS))}."
            )
        if isinstance(self.rate, bool) or not isinstance(self.rate, (int, float)) or not 0 <= self.rate <= 1:
            raise ConfigError(f"perturbation {self.name!r} needs a rate in [0, 1], got {self.rate!r}.")
        if not self.id:
            object.__setattr__(self, "id", self.name)
        if "." in self.id or not self.id.strip():
            raise ConfigError(f"perturbation id {self.id!r} must be non-empty and contain no '.' (it names columns).")

    def apply(self, tokens: Sequence[str], labels: Sequence[str] | None, rng: random.Random) -> tuple[Tokens, Labels]:
        """Perturb one sentence of words; labels (if given) stay aligned with the words."""
        if labels is not None and len(labels) != len(tokens):
            raise ValueError(f"{len(tokens)} tokens but {len(labels)} labels; they must be aligned.")
        return PERTURBATIONS[self.name](list(tokens), None if labels is None else list(labels), float(self.rate), rng)

    def apply_text(self, text: str, rng: random.Random) -> str:
        """Perturb the whitespace words of a text line by line; line breaks are kept.

        Runs of spaces or tabs inside a line become single spaces.
        """
        if self.rate == 0:
            return text
        lines = []
        for line in text.split("\n"):
            words = line.split()
            lines.append(" ".join(self.apply(words, None, rng)[0]) if words else line)
        return "\n".join(lines)


def parse_perturbations(config: Iterable[Mapping[str, Any]] | None) -> list[Perturbation]:
    """Build perturbations from a YAML list of ``{name, rate[, id]}``; refuse bad entries."""
    if config is None:
        return []
    if isinstance(config, (str, bytes, Mapping)):
        raise ConfigError("robustness perturbations must be a list of {name, rate} entries.")
    perturbations = []
    for entry in config:
        if not isinstance(entry, Mapping):
            raise ConfigError(f"robustness entry {entry!r} must be a mapping like {{name: char_swap, rate: 0.05}}.")
        unknown = set(entry) - {"name", "rate", "id"}
        if unknown or "name" not in entry or "rate" not in entry:
            raise ConfigError(
                f"robustness entry {dict(entry)!r} must have exactly the keys name, rate (and optionally id)."
            )
        perturbations.append(Perturbation(str(entry["name"]), entry["rate"], str(entry.get("id") or "")))
    ids = [p.id for p in perturbations]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ConfigError(f"perturbation {duplicates[0]!r} appears twice; give each entry a distinct id.")
    return perturbations


def example_rng(seed: int, perturbation_id: str, index: int) -> random.Random:
    """The generator of one example: depends on (seed, perturbation, example index) only, so the
    perturbed test set does not depend on batching, ordering or other perturbations."""
    return random.Random(f"{seed}/{perturbation_id}/{index}")


# ------------------------------------------------------------------------------ summary
def _metric_name(column: str) -> str:
    return column.split(".", 1)[1] if column.startswith("quality.") else column


def robustness_summary(
    clean: Mapping[str, float],
    perturbed: Mapping[str, Mapping[str, float]],
    main_metric: str,
    higher_is_better: bool,
    drop: str = "relative",
    clean_metrics: Iterable[str] = (),
) -> dict[str, float]:
    """``robust.*`` columns from clean and perturbed scores.

    Args:
        clean: the clean test metrics, e.g. ``{"quality.f1": 0.8}`` (``quality.`` is optional).
        perturbed: perturbation id -> its metrics, same keys as ``clean``.
        main_metric: the metric the drop is measured on, e.g. ``f1`` or ``quality.ppl``.
        higher_is_better: whether a larger ``main_metric`` is better.
        drop: ``relative`` (below) or ``difference``: ``perturbed - clean`` (``clean - perturbed``
            if higher is better), for metrics on a log scale such as the NLL of a language model,
            whose perplexity's relative change explodes (causal LM rows use the NLL in nats).
        clean_metrics: clean scores to report as ``robust.clean.<metric>`` (the scores the drops
            are relative to: on the same, possibly capped, test examples).

    Returns:
        ``robust.<id>.<metric>`` for every perturbed metric, ``robust.<id>.drop``,
        ``robust.mean_drop`` and ``robust.clean.<metric>`` for each of ``clean_metrics``. The drop is relative to the clean score and positive when the
        perturbation makes things worse: ``(clean - perturbed) / |clean|`` if higher is better,
        ``(perturbed - clean) / |clean|`` otherwise; NaN when the clean score is 0 or missing.
    """
    main = _metric_name(main_metric)
    clean_scores = {_metric_name(k): float(v) for k, v in clean.items() if isinstance(v, (int, float))}
    row: dict[str, float] = {}
    drops = []
    for pert_id, scores in perturbed.items():
        scores = {_metric_name(k): float(v) for k, v in scores.items() if isinstance(v, (int, float))}
        for metric, value in scores.items():
            row[f"robust.{pert_id}.{metric}"] = value
        base = clean_scores.get(main, math.nan)
        value = scores.get(main, math.nan)
        change = (base - value) if higher_is_better else (value - base)
        if not math.isfinite(base) or (drop == "relative" and base == 0):
            value_drop = math.nan
        else:
            value_drop = change if drop == "difference" else change / abs(base)
        row[f"robust.{pert_id}.drop"] = value_drop
        drops.append(value_drop)
    row["robust.mean_drop"] = float(sum(drops) / len(drops)) if drops else math.nan
    for metric in clean_metrics:
        row[f"robust.clean.{_metric_name(metric)}"] = float(clean[metric])
    return row


def ood_columns(scores: Mapping[str, float], main_metric: str) -> dict[str, float]:
    """``robust.ood.*`` columns: the main metric on each out-of-distribution test set and their mean.

    Args:
        scores: OOD set name (an ``evaluation.ood`` key) -> the main metric on its test split.
        main_metric: the task's main quality column, e.g. ``quality.f1``.

    Returns:
        ``robust.ood.<name>.<metric>`` per set and ``robust.ood.mean_<metric>``; empty without sets.
    """
    if not scores:
        return {}
    main = _metric_name(main_metric)
    row = {f"robust.ood.{name}.{main}": float(score) for name, score in scores.items()}
    row[f"robust.ood.mean_{main}"] = sum(map(float, scores.values())) / len(scores)
    return row
