"""The built-in smoke benchmark: small, deterministic, learnable data for each task kind.

Used by ``compbench`` with no arguments and by the tests, so that the whole pipeline runs
offline in seconds. It is *not* a research benchmark: it checks that fine-tuning, compression
and evaluation work end to end and that a trained model is clearly better than chance.

The language is made of pseudo-words built from syllables with a fixed seed. Entities come
from fixed lexicons and appear in fixed sentence templates, so a model can learn them:
- NER: person, organisation, location and date mentions (BIO tags) in template sentences;
  some names are persons in one sentence and places in another, and validation/test use
  names never seen in training, so that a model must use context (F1 stays below 1).
- LM: sentences from a small grammar with subject-verb agreement.
- Summarization: a document of several sentences; the summary is the lead sentence's
  person, verb and location (an extractive target a small seq2seq model learns quickly).
"""

from __future__ import annotations

import random

_SYLLABLES = [c + v for c in "bdfgklmnprstwyz" for v in "aeiou"]


def _words(rng: random.Random, n: int, syllables: tuple[int, int], capital: bool) -> list[str]:
    out: set[str] = set()
    while len(out) < n:
        word = "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(*syllables)))
        out.add(word.capitalize() if capital else word)
    return sorted(out)


class _Lexicon:
    def __init__(self, seed: int = 1234):
        rng = random.Random(seed)
        self.persons = _words(rng, 60, (2, 3), True)
        self.orgs = _words(rng, 30, (2, 3), True)
        self.locs = _words(rng, 40, (2, 3), True)
        self.months = _words(rng, 12, (2, 2), True)
        self.nouns = _words(rng, 80, (1, 2), False)
        self.verbs_sg = _words(rng, 30, (2, 2), False)
        self.verbs_pl = [v + "ni" for v in self.verbs_sg]
        self.adjs = _words(rng, 30, (2, 2), False)
        self.fillers = _words(rng, 40, (1, 2), False)
        # Names that are persons in some sentences and places in others: only context decides.
        self.ambiguous = _words(rng, 15, (2, 3), True)
        # Names never seen in training, used in validation/test: the model must use context.
        self.unseen = {kind: _words(rng, 20, (3, 3), True) for kind in ("PER", "ORG", "LOC")}


_TEMPLATES = [
    "{PER} {v} {f} {LOC} {f} {DATE} .",
    "{f} {ORG} {v} {PER} {f} {LOC} .",
    "{PER} {f} {ORG} {v} {f} {f} .",
    "{f} {DATE} {PER} {v} {LOC} .",
    "{ORG} {f} {v} {f} {LOC} {f} {PER} .",
]


def _entity(rng: random.Random, lex: _Lexicon, kind: str, unseen_rate: float) -> list[str]:
    def name(pool: list[str]) -> str:
        if rng.random() < unseen_rate:
            return rng.choice(lex.unseen[kind])
        if kind in ("PER", "LOC") and rng.random() < 0.25:
            return rng.choice(lex.ambiguous)
        return rng.choice(pool)

    if kind == "PER":
        return [name(lex.persons)] + ([name(lex.persons)] if rng.random() < 0.5 else [])
    if kind == "ORG":
        return [name(lex.orgs), "Group" if rng.random() < 0.3 else name(lex.orgs)]
    if kind == "LOC":
        return [name(lex.locs)]
    return [str(rng.randint(1, 28)), rng.choice(lex.months), str(rng.randint(1990, 2024))]


def ner_sentences(n: int, seed: int, unseen_rate: float = 0.0) -> list[tuple[list[str], list[str]]]:
    """``n`` (tokens, BIO tags) sentences with PER/ORG/LOC/DATE entities.

    Args:
        n: number of sentences.
        seed: random seed (one per split).
        unseen_rate: probability that an entity name comes from names absent from training.
    """
    lex, rng = _Lexicon(), random.Random(seed)
    out = []
    for _ in range(n):
        tokens: list[str] = []
        tags: list[str] = []
        for slot in rng.choice(_TEMPLATES).split():
            kind = slot.strip("{}")
            if kind in ("PER", "ORG", "LOC", "DATE"):
                words = _entity(rng, lex, kind, unseen_rate)
                tokens += words
                tags += [f"B-{kind}"] + [f"I-{kind}"] * (len(words) - 1)
            else:
                tokens.append({"v": rng.choice(lex.verbs_sg), "f": rng.choice(lex.fillers)}.get(kind, kind))
                tags.append("O")
        out.append((tokens, tags))
    return out


def _lm_sentence(rng: random.Random, lex: _Lexicon) -> str:
    plural = rng.random() < 0.5
    subject = rng.choice(lex.nouns) + ("s" if plural else "")
    verb = rng.choice(lex.verbs_pl if plural else lex.verbs_sg)
    words = ["the", rng.choice(lex.adjs), subject, verb, "the", rng.choice(lex.nouns)]
    if rng.random() < 0.5:
        words += ["in", rng.choice(lex.locs)]
    return " ".join(words) + " ."


def lm_documents(n: int, seed: int) -> list[str]:
    """``n`` documents of 3–8 grammar sentences each."""
    lex, rng = _Lexicon(), random.Random(seed)
    return [" ".join(_lm_sentence(rng, lex) for _ in range(rng.randint(3, 8))) for _ in range(n)]


def summarization_pairs(n: int, seed: int) -> list[tuple[str, str]]:
    """``n`` (document, summary) pairs; the summary is ``PER verb LOC`` of the lead sentence."""
    lex, rng = _Lexicon(), random.Random(seed)
    out = []
    for _ in range(n):
        person, verb, loc = rng.choice(lex.persons), rng.choice(lex.verbs_sg), rng.choice(lex.locs)
        lead = f"{person} {verb} {rng.choice(lex.fillers)} {loc} ."
        body = " ".join(_lm_sentence(rng, lex) for _ in range(rng.randint(2, 4)))
        out.append((f"{lead} {body}", f"{person} {verb} {loc} ."))
    return out
