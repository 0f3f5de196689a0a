"""Token classification (named-entity recognition): MasakhaNER, CoNLL-2003, the smoke task.

Words are split into sub-words by the model's tokenizer; the label of a word sits on its first
sub-word and the other sub-words are ignored (-100), as in the MasakhaNER baselines. At
evaluation the word's prediction is the argmax at its first sub-word. Words cut off by
``max_length`` are predicted ``O`` (counted and logged), so the entity-level F1 is always over
every gold word of the test file. The F1 is seqeval's (conlleval-style, micro over types).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from seqeval.metrics import classification_report, f1_score, precision_score, recall_score
from torch.utils.data import DataLoader
from transformers import AutoModelForTokenClassification, DataCollatorForTokenClassification

from compbench.devices import model_device, to_device
from compbench.errors import ConfigError
from compbench.tasks import synthetic
from compbench.tasks.base import LogitsCallback, Task
from compbench.tasks.readers import read_conll

log = logging.getLogger(__name__)

#: MasakhaNER 1.0 label set (PER, ORG, LOC, DATE in BIO); fixing the order keeps label ids
#: identical across languages, which zero-shot cross-lingual evaluation needs.
MASAKHANER_LABELS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-DATE", "I-DATE"]


def write_conll_predictions(path: Path, sentences: list[tuple[list[str], list[str], list[str]]]) -> None:
    """Write ``token gold pred`` lines, a blank line between sentences."""
    with open(path, "w", encoding="utf-8") as handle:
        for tokens, gold, pred in sentences:
            for token, g, p in zip(tokens, gold, pred):
                handle.write(f"{token} {g} {p}\n")
            handle.write("\n")


def read_conll_predictions(path: Path) -> tuple[list[list[str]], list[list[str]]]:
    """Gold and predicted tag sequences from a ``token gold pred`` file."""
    gold, pred, g, p = [], [], [], []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            parts = line.split()
            if not parts:
                if g:
                    gold.append(g), pred.append(p)
                    g, p = [], []
                continue
            g.append(parts[-2])
            p.append(parts[-1])
    if g:
        gold.append(g), pred.append(p)
    return gold, pred


def ner_quality(gold: list[list[str]], pred: list[list[str]]) -> dict[str, float]:
    """Entity-level micro F1/precision/recall and per-type F1 (seqeval, default conlleval mode)."""
    metrics = {
        "quality.f1": f1_score(gold, pred, zero_division=0),
        "quality.precision": precision_score(gold, pred, zero_division=0),
        "quality.recall": recall_score(gold, pred, zero_division=0),
    }
    report = classification_report(gold, pred, output_dict=True, zero_division=0)
    for entity_type, scores in report.items():
        if entity_type not in ("micro avg", "macro avg", "weighted avg"):
            metrics[f"quality.f1_{entity_type}"] = float(scores["f1-score"])
    return {k: float(v) for k, v in metrics.items()}


@dataclass
class TokenClassificationTask(Task):
    """NER on CoNLL files, a hub dataset with ``tokens``/``ner_tags`` columns, or the smoke data."""

    labels: list[str] | None = None
    tokens_column: str = "tokens"
    tags_column: str = "ner_tags"
    label_all_subwords: bool = False

    kind: ClassVar[str] = "token_classification"
    main_metric: ClassVar[str] = "quality.f1"
    supported_families: ClassVar[tuple[str, ...]] = ("encoder", "decoder")
    local_suffixes: ClassVar[tuple[str, ...]] = (".txt", ".conll")

    # ------------------------------------------------------------------ data
    def read_local(self, path: Path) -> list[tuple[list[str], list[str]]]:
        return read_conll(path)

    def read_hub_row(self, row: dict[str, Any]) -> tuple[list[str], list[str]]:
        tags = row[self.tags_column]
        if tags and isinstance(tags[0], int):
            names = self.labels or MASAKHANER_LABELS
            tags = [names[t] for t in tags]
        return list(row[self.tokens_column]), list(tags)

    def read_synthetic(self, split: str, n: int) -> list[tuple[list[str], list[str]]]:
        seed = {"train": 0, "validation": 1, "test": 2}[split]
        return synthetic.ner_sentences(n, seed=seed, unseen_rate=0.0 if split == "train" else 0.3)

    def validate_examples(self, split: str, examples: list[Any]) -> None:
        """With ``task.labels`` given, a tag outside it is a broken file, not something to guess at."""
        if self.labels is None:
            return
        unknown = sorted({t for _, tags in examples for t in tags} - set(self.labels))
        if unknown:
            raise ConfigError(
                f"{self.provenance.get(split, split)} has tag(s) {', '.join(unknown[:5])} outside task.labels "
                f"({', '.join(self.labels)}); fix the file or list them in task.labels."
            )

    def training_texts(self) -> list[str]:
        return [" ".join(tokens) for tokens, _ in self.load()["train"]]

    def label_list(self) -> list[str]:
        """Labels in a fixed order: the configured list, else sorted from the train split."""
        if self.labels is None:
            seen = {t for _, tags in self.load()["train"] for t in tags}
            self.labels = ["O"] + sorted(seen - {"O"})
        return list(self.labels)

    def model_kwargs(self) -> dict[str, Any]:
        labels = self.label_list()
        return {
            "num_labels": len(labels),
            "id2label": dict(enumerate(labels)),
            "label2id": {l: i for i, l in enumerate(labels)},
        }

    def auto_model_class(self):
        return AutoModelForTokenClassification

    def encode_split(self, split: str) -> list[dict[str, Any]]:
        label2id = {l: i for i, l in enumerate(self.label_list())}
        sentences = self.splits[split]
        unknown = {t for _, tags in sentences for t in tags} - set(label2id)
        if unknown:
            log.warning("%s %s: tags %s not in the label set are trained as 'O'", self.name, split, sorted(unknown))
        return [self._encode(tokens, tags, label2id) for tokens, tags in sentences]

    def perturb_example(self, example, perturbation, rng):
        tokens, tags = example
        return perturbation.apply(tokens, tags, rng)

    def _encode(self, tokens: list[str], tags: list[str], label2id: dict[str, int]) -> dict[str, Any]:
        enc = self.tokenizer(tokens, is_split_into_words=True, truncation=True, max_length=self.max_length)
        word_ids = enc.word_ids()
        labels, previous = [], None
        for word in word_ids:
            if word is None or (word == previous and not self.label_all_subwords):
                labels.append(-100)
            else:
                labels.append(label2id.get(tags[word], 0))
            previous = word
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "labels": labels,
                "word_ids": [-1 if w is None else w for w in word_ids]}

    def dataloader(self, split: str, shuffle: bool = False) -> DataLoader:
        collator = DataCollatorForTokenClassification(self.tokenizer)

        def collate(features):
            word_ids = [f["word_ids"] for f in features]
            batch = collator([{k: v for k, v in f.items() if k != "word_ids"} for f in features])
            width = batch["input_ids"].shape[1]
            batch["word_ids"] = torch.tensor([w + [-1] * (width - len(w)) for w in word_ids])
            return batch

        size = self.batch_size if split == "train" else self.eval_batch_size
        return DataLoader(self.features[split], batch_size=size, shuffle=shuffle, collate_fn=collate)

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def predict(self, model: torch.nn.Module, split: str = "test", on_logits: LogitsCallback | None = None) -> list[list[str]]:
        """Predicted tag sequences, one per sentence of ``split`` (all words, in order)."""
        labels = self.label_list()
        device = model_device(model)
        model.eval()
        preds: list[list[str]] = []
        sentences = self.splits[split]
        for batch in self.dataloader(split):
            word_ids = batch.pop("word_ids")
            inputs = to_device(batch, device)
            gold = inputs.pop("labels")
            logits = model(**inputs).logits.float()
            if on_logits is not None:
                scored = gold != -100
                on_logits(logits[scored].cpu(), gold[scored].cpu())
            best = logits.argmax(-1).cpu()
            for row in range(best.shape[0]):
                n_words = len(sentences[len(preds)][0])
                tags = ["O"] * n_words
                seen = set()
                for pos, word in enumerate(word_ids[row].tolist()):
                    if word >= 0 and word not in seen:
                        seen.add(word)
                        tags[word] = labels[int(best[row, pos])]
                preds.append(tags)
        return preds

    has_saved_predictions: ClassVar[bool] = True

    def saved_predictions(self, run_dir: Path, split: str = "test") -> tuple[list[list[str]], list[list[str]]]:
        """Predicted and gold tag sequences from ``predictions_<split>.conll``."""
        gold, pred = read_conll_predictions(Path(run_dir) / f"predictions_{split}.conll")
        return pred, gold

    def evaluate(self, model, out_dir: Path | None, split: str = "test", on_logits: LogitsCallback | None = None) -> dict[str, float]:
        preds = self.predict(model, split, on_logits)
        sentences = self.splits[split]
        gold = [tags for _, tags in sentences]
        truncated = sum(len(t) for t, _ in sentences) - sum(
            len({w for w in f["word_ids"] if w >= 0}) for f in self.features[split]
        )
        if truncated:
            log.warning("%s split: %d words beyond max_length=%d were predicted 'O'",
                        self.split_label(split), truncated, self.max_length)
        if out_dir is not None:
            write_conll_predictions(
                Path(out_dir) / f"predictions_{split}.conll",
                [(tokens, g, p) for (tokens, g), p in zip(sentences, preds)],
            )
        return ner_quality(gold, preds)
