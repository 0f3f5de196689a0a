"""Readers for the local file formats every task accepts through ``task.data_dir``.

- NER: CoNLL files ``train.txt``/``dev.txt``/``test.txt``, one ``token ... TAG`` per line, a
  blank line between sentences (MasakhaNER and CoNLL-2003 as distributed).
- LM: raw text ``train.txt``/``valid.txt``/``test.txt`` (WikiText/PTB as distributed).
- Summarization: JSON lines ``train.jsonl``/``validation.jsonl``/``test.jsonl`` with
  ``{"document": ..., "summary": ...}``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

#: Accepted file names per split, first match wins (dev/valid/validation are synonyms).
SPLIT_FILES = {
    "train": ("train",),
    "validation": ("dev", "valid", "validation", "val"),
    "test": ("test",),
}


def find_split_file(data_dir: Path, split: str, suffixes: tuple[str, ...]) -> Path | None:
    """The file holding ``split`` in ``data_dir`` (e.g. ``dev.txt`` for validation), or None."""
    for stem in SPLIT_FILES[split]:
        for suffix in suffixes:
            path = Path(data_dir) / f"{stem}{suffix}"
            if path.is_file():
                return path
            # Distributions that prefix the corpus name: ptb.train.txt, wiki.test.tokens.
            prefixed = sorted(Path(data_dir).glob(f"*.{stem}{suffix}"))
            if prefixed:
                return prefixed[0]
    return None


def read_conll(path: Path) -> list[tuple[list[str], list[str]]]:
    """Sentences of a CoNLL file as (tokens, tags): first column token, last column tag."""
    sentences: list[tuple[list[str], list[str]]] = []
    tokens: list[str] = []
    tags: list[str] = []
    with open(path, encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, 1):
            parts = line.split()
            if not parts or parts[0] == "-DOCSTART-":
                if tokens:
                    sentences.append((tokens, tags))
                    tokens, tags = [], []
                continue
            if len(parts) < 2:
                raise ValueError(f"{path}:{line_no}: expected 'token TAG', got {line.strip()!r}")
            tokens.append(parts[0])
            tags.append(parts[-1])
    if tokens:
        sentences.append((tokens, tags))
    return sentences


_WIKITEXT_HEADING = re.compile(r"^ = [^=].* = $")


def split_documents(text: str, policy: str) -> list[str]:
    """Split raw text into documents.

    Args:
        text: the whole file.
        policy: ``wikitext`` (a new document at each top-level `` = Title = `` heading),
            ``lines`` (each non-empty line is a document), ``blank_lines`` (paragraphs separated
            by blank lines), or ``none`` (the whole file is one document, as PTB is usually
            evaluated as one stream).
    """
    if policy == "none":
        return [text] if text.strip() else []
    if policy == "lines":
        return [line.strip() for line in text.splitlines() if line.strip()]
    if policy == "blank_lines":
        return [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    if policy == "wikitext":
        docs: list[list[str]] = []
        for line in text.splitlines():
            if _WIKITEXT_HEADING.match(line) or not docs:
                docs.append([])
            if line.strip():
                docs[-1].append(line.strip())
        return ["\n".join(d) for d in docs if d]
    raise ValueError(f"unknown document split policy {policy!r}; use wikitext, lines, blank_lines or none")


def read_jsonl(path: Path, document_key: str, summary_key: str) -> list[tuple[str, str]]:
    """(document, summary) pairs from a JSON-lines file."""
    pairs = []
    with open(path, encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{line_no}: not a JSON object ({exc.msg})") from exc
            if not isinstance(row, dict) or document_key not in row or summary_key not in row:
                raise ValueError(f"{path}:{line_no}: needs keys {document_key!r} and {summary_key!r}")
            pairs.append((row[document_key], row[summary_key]))
    return pairs
