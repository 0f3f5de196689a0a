"""Abstractive summarization with encoder-decoder models: XSum, CNN/DailyMail, the smoke task.

Quality is ROUGE-1/2/L F-measure from Google's ``rouge-score`` (stemming on), and ROUGE-Lsum,
the summary-level LCS over newline-separated sentences in which CNN/DailyMail results are
published. Sentences are split with nltk's Punkt algorithm (``sent_split``); HF's
``run_summarization`` uses ``nltk.sent_tokenize``, i.e. Punkt with its pretrained English
parameters, which need nltk data that may be absent offline, so compbench uses Punkt without
them (ours: identical splits except after abbreviations such as "Dr.", which this splits).
Generation settings (beams, maximum new tokens) are task parameters and go into the record.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from rouge_score import rouge_scorer
from torch.utils.data import DataLoader
from transformers import AutoModelForSeq2SeqLM, DataCollatorForSeq2Seq

from compbench.devices import model_device, to_device
from compbench.tasks import synthetic
from compbench.tasks.base import LogitsCallback, Task
from compbench.tasks.readers import read_jsonl

log = logging.getLogger(__name__)

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")


def sent_split(text: str) -> str:
    """``text`` with one sentence per line (existing line breaks kept), as rougeLsum expects."""
    from nltk.tokenize.punkt import PunktSentenceTokenizer

    splitter = PunktSentenceTokenizer()
    return "\n".join(s for line in text.split("\n") for s in splitter.tokenize(line) if s.strip())


def rouge_quality(references: list[str], predictions: list[str]) -> dict[str, float]:
    """Mean ROUGE-1/2/L/Lsum F-measure over examples (rouge-score, Porter stemming), as papers report."""
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    totals = {r: 0.0 for r in ROUGE_TYPES}
    for ref, pred in zip(references, predictions):
        scores = scorer.score(sent_split(ref), sent_split(pred))
        for r in ROUGE_TYPES:
            totals[r] += scores[r].fmeasure
    n = max(len(references), 1)
    return {f"quality.{r}": totals[r] / n for r in ROUGE_TYPES}


@dataclass
class SummarizationTask(Task):
    """Summarization on JSON lines, a hub dataset, or the smoke data."""

    max_target_length: int = 64
    num_beams: int = 4
    max_new_tokens: int = 60
    document_column: str = "document"
    summary_column: str = "summary"

    kind: ClassVar[str] = "summarization"
    main_metric: ClassVar[str] = "quality.rougeL"
    supported_families: ClassVar[tuple[str, ...]] = ("encoder_decoder",)
    local_suffixes: ClassVar[tuple[str, ...]] = (".jsonl",)

    def read_local(self, path: Path) -> list[tuple[str, str]]:
        return read_jsonl(path, self.document_column, self.summary_column)

    def read_hub_row(self, row: dict[str, Any]) -> tuple[str, str]:
        return row[self.document_column], row[self.summary_column]

    def read_synthetic(self, split: str, n: int) -> list[tuple[str, str]]:
        return synthetic.summarization_pairs(n, seed={"train": 20, "validation": 21, "test": 22}[split])

    def training_texts(self) -> list[str]:
        return [text for pair in self.load()["train"] for text in pair]

    def auto_model_class(self):
        return AutoModelForSeq2SeqLM

    def generation_kwargs(self) -> dict[str, Any]:
        return {"num_beams": self.num_beams, "max_new_tokens": self.max_new_tokens}

    def encode_split(self, split: str) -> list[dict[str, Any]]:
        pairs = self.splits[split]
        lengths = self.tokenizer([d for d, _ in pairs], return_length=True)["length"]
        too_long = sum(n > self.max_length for n in lengths)
        if too_long:
            log.warning("%s %s: %d of %d documents longer than max_length=%d tokens were truncated",
                        self.name, split, too_long, len(pairs), self.max_length)
        enc = self.tokenizer([d for d, _ in pairs], truncation=True, max_length=self.max_length)
        tgt = self.tokenizer(text_target=[s for _, s in pairs], truncation=True, max_length=self.max_target_length)
        return [
            {"input_ids": i, "attention_mask": m, "labels": l}
            for i, m, l in zip(enc["input_ids"], enc["attention_mask"], tgt["input_ids"])
        ]

    def perturb_example(self, example, perturbation, rng):
        document, summary = example
        return perturbation.apply_text(document, rng), summary

    @torch.no_grad()
    def dev_logits(self, model, on_logits: LogitsCallback) -> None:
        """Teacher-forced logits of the validation references (no generation needed)."""
        device = model_device(model)
        model.eval()
        for batch in self.dataloader("validation"):
            batch = to_device(batch, device)
            labels = batch.pop("labels")
            logits = model(**batch, labels=labels).logits.float()
            scored = labels != -100
            on_logits(logits[scored].cpu(), labels[scored].cpu())

    def dataloader(self, split: str, shuffle: bool = False) -> DataLoader:
        collator = DataCollatorForSeq2Seq(self.tokenizer, label_pad_token_id=-100)
        size = self.batch_size if split == "train" else self.eval_batch_size
        return DataLoader(self.features[split], batch_size=size, shuffle=shuffle, collate_fn=collator)

    has_saved_predictions: ClassVar[bool] = True

    def saved_predictions(self, run_dir: Path, split: str = "test") -> tuple[list[str], list[str]]:
        """Generated and reference summaries from ``predictions_<split>.jsonl``."""
        rows = [json.loads(line) for line in (Path(run_dir) / f"predictions_{split}.jsonl").read_text().splitlines()]
        return [r["prediction"] for r in rows], [r["reference"] for r in rows]

    @torch.no_grad()
    def evaluate(self, model, out_dir: Path | None, split: str = "test", on_logits: LogitsCallback | None = None) -> dict[str, float]:
        device = model_device(model)
        model.eval()
        predictions: list[str] = []
        for batch in self.dataloader(split):
            batch = to_device(batch, device)
            labels = batch.pop("labels")
            if on_logits is not None:
                # Calibration over teacher-forced reference tokens.
                logits = model(**batch, labels=labels).logits.float()
                scored = labels != -100
                on_logits(logits[scored].cpu(), labels[scored].cpu())
            generated = model.generate(**batch, **self.generation_kwargs())
            predictions += self.tokenizer.batch_decode(generated, skip_special_tokens=True)
        pairs = self.splits[split]
        references = [s for _, s in pairs]
        predictions = [p.strip() for p in predictions]
        if out_dir is not None:
            with open(Path(out_dir) / f"predictions_{split}.jsonl", "w", encoding="utf-8") as handle:
                for i, (ref, pred) in enumerate(zip(references, predictions)):
                    handle.write(json.dumps({"id": i, "reference": ref, "prediction": pred}, ensure_ascii=False) + "\n")
        return rouge_quality(references, predictions)
