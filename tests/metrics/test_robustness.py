"""Perturbations: determinism, label alignment, Yoruba diacritics, config parsing, summary columns."""

import math
import random
import unicodedata

import pytest

from compbench.errors import ConfigError
from compbench.metrics.registry import spec_for
from compbench.metrics.robustness import (
    PERTURBATIONS,
    Perturbation,
    example_rng,
    parse_perturbations,
    remove_diacritics,
    robustness_summary,
)

# A MasakhaNER-style Yoruba sentence (IOB2 labels).
TOKENS = ["Ọ̀jọ̀gbọ́n", "Wọlé", "Ṣóyínká", "lọ", "sí", "Èkó", "ní", "àná", "."]
LABELS = ["O", "B-PER", "I-PER", "O", "O", "B-LOC", "O", "B-DATE", "O"]
CHAR_NOISE = ("char_swap", "char_delete", "char_insert", "char_substitute", "random_case")


def nfc(words):
    return [unicodedata.normalize("NFC", w) for w in words]


@pytest.mark.parametrize("name", sorted(PERTURBATIONS))
def test_rate_zero_returns_input_unchanged(name):
    perturbation = Perturbation(name, 0.0)
    tokens, labels = perturbation.apply(TOKENS, LABELS, random.Random(0))
    assert tokens == TOKENS and labels == LABELS
    text = "Ọ̀jọ̀gbọ́n  Wọlé\n\nlọ sí Èkó "
    assert perturbation.apply_text(text, random.Random(0)) == text


@pytest.mark.parametrize("name", sorted(PERTURBATIONS))
def test_same_seed_same_output_different_seeds_differ(name):
    perturbation = Perturbation(name, 0.5)
    first = perturbation.apply(TOKENS, LABELS, example_rng(3, name, 0))
    again = perturbation.apply(TOKENS, LABELS, example_rng(3, name, 0))
    assert first == again
    outputs = {tuple(perturbation.apply(TOKENS, LABELS, example_rng(seed, name, 0))[0]) for seed in range(8)}
    assert len(outputs) > 1
    assert tuple(first[0]) != tuple(TOKENS)


@pytest.mark.parametrize("name", sorted(PERTURBATIONS))
def test_labels_stay_aligned_and_no_token_is_empty(name):
    perturbation = Perturbation(name, 0.9)
    for seed in range(20):
        tokens, labels = perturbation.apply(TOKENS, LABELS, random.Random(seed))
        assert len(tokens) == len(labels) >= 1
        assert all(tokens), tokens
        if name != "word_drop":
            assert labels == LABELS


def test_char_noise_at_rate_one_touches_every_word_and_keeps_tone_marks_on_their_vowels():
    for name in CHAR_NOISE:
        tokens, _ = Perturbation(name, 1.0).apply(TOKENS, LABELS, random.Random(1))
        changed = [a != b for a, b in zip(nfc(tokens), nfc(TOKENS)) if len(b) > 1 or name != "char_swap"]
        assert sum(changed) >= len(changed) - 2, (name, tokens)
        for word in tokens:  # no combining mark left without a base character
            assert not unicodedata.combining(unicodedata.normalize("NFD", word)[0]), (name, word)


def test_char_delete_never_empties_a_word():
    tokens, _ = Perturbation("char_delete", 1.0).apply(["a", "ab", "Ọ̀"], None, random.Random(0))
    assert [len(t) > 0 for t in tokens] == [True, True, True]
    assert tokens[0] == "a" and tokens[2] == "Ọ̀"


def test_strip_diacritics_on_yoruba_words():
    assert remove_diacritics("Ọ̀jọ̀gbọ́n") == "Ojogbon"
    assert remove_diacritics("Ṣóyínká") == "Soyinka"
    assert remove_diacritics("Èkó") == "Eko"
    assert remove_diacritics(unicodedata.normalize("NFD", "àná")) == "ana"
    tokens, labels = Perturbation("strip_diacritics", 1.0).apply(TOKENS, LABELS, random.Random(0))
    assert tokens == ["Ojogbon", "Wole", "Soyinka", "lo", "si", "Eko", "ni", "ana", "."]
    assert labels == LABELS


def test_case_changes():
    assert Perturbation("lowercase", 1.0).apply(["Èkó", "ABC"], None, random.Random(0))[0] == ["èkó", "abc"]
    assert Perturbation("uppercase", 1.0).apply(["Èkó", "abc"], None, random.Random(0))[0] == ["ÈKÓ", "ABC"]
    assert Perturbation("random_case", 1.0).apply(["aBc"], None, random.Random(0))[0] == ["AbC"]


def test_word_drop_drops_labels_with_words_and_repairs_entity_starts():
    tokens = ["Wọlé", "Ṣóyínká", "Adé", "lọ"]
    labels = ["B-PER", "I-PER", "I-PER", "O"]
    seen = set()
    for seed in range(200):
        out_tokens, out_labels = Perturbation("word_drop", 0.5).apply(tokens, labels, random.Random(seed))
        assert len(out_tokens) == len(out_labels) >= 1
        for token, label in zip(out_tokens, out_labels):
            original = labels[tokens.index(token)]
            assert label == original or (original == "I-PER" and label == "B-PER")
        per = [label for label in out_labels if label != "O"]
        if per:  # the surviving part of the one entity is still exactly one entity
            assert per[0] == "B-PER" and all(label == "I-PER" for label in per[1:])
        seen.add(tuple(out_tokens))
    assert len(seen) > 5
    # Two adjacent entities: dropping the second one's B- must not merge it into the first.
    out_tokens, out_labels = Perturbation("word_drop", 0.5).apply(["A", "B", "C"], ["B-PER", "B-PER", "I-PER"], _DropOnly(1))
    assert out_tokens == ["A", "C"] and out_labels == ["B-PER", "B-PER"]


class _DropOnly(random.Random):
    """A generator whose draws drop exactly the word at ``index`` (for word_drop at rate 0.5)."""

    def __init__(self, index):
        super().__init__(0)
        self.index, self.calls = index, 0

    def random(self):
        self.calls += 1
        return 0.0 if self.calls - 1 == self.index else 0.99


def test_apply_text_keeps_line_breaks_and_is_deterministic():
    text = "Ọ̀jọ̀gbọ́n Wọlé Ṣóyínká lọ sí Èkó.\n\nÓ padà dé ní àná.\n"
    for name in sorted(PERTURBATIONS):
        perturbation = Perturbation(name, 0.4)
        out = perturbation.apply_text(text, random.Random(5))
        assert out.count("\n") == text.count("\n")
        assert out.split("\n")[1] == ""
        assert all(line.strip() for i, line in enumerate(out.split("\n")) if i in (0, 2))
        assert out == perturbation.apply_text(text, random.Random(5))


def test_per_example_generators_make_the_perturbed_set_independent_of_order():
    """What the evaluation stage does: example i gets ``example_rng(seed, id, i)``."""
    examples = [(TOKENS, LABELS), (TOKENS[:4], LABELS[:4]), (TOKENS[4:], LABELS[4:])]
    perturbation = Perturbation("char_substitute", 0.3)

    def perturbed(seed, order):
        return {i: perturbation.apply(*examples[i], example_rng(seed, perturbation.id, i)) for i in order}

    forward = perturbed(7, [0, 1, 2])
    assert forward == perturbed(7, [2, 0, 1])
    assert forward != perturbed(8, [0, 1, 2])


def test_parse_perturbations_from_yaml_list():
    from omegaconf import OmegaConf

    config = OmegaConf.create(
        "robustness:\n"
        "  - {name: char_swap, rate: 0.05}\n"
        "  - {name: char_swap, rate: 0.2, id: char_swap_heavy}\n"
        "  - {name: strip_diacritics, rate: 1}\n"
    )
    perturbations = parse_perturbations(config.robustness)
    assert [(p.id, p.name, p.rate) for p in perturbations] == [
        ("char_swap", "char_swap", 0.05),
        ("char_swap_heavy", "char_swap", 0.2),
        ("strip_diacritics", "strip_diacritics", 1),
    ]
    assert parse_perturbations(None) == []


@pytest.mark.parametrize(
    "config, message",
    [
        ([{"name": "typo_storm", "rate": 0.1}], "unknown perturbation 'typo_storm'"),
        ([{"name": "char_swap", "rate": 1.5}], r"rate in \[0, 1\]"),
        ([{"name": "char_swap", "rate": 0.1, "prob": 2}], "exactly the keys"),
        ([{"name": "char_swap"}], "exactly the keys"),
        ([{"name": "char_swap", "rate": 0.1}, {"name": "char_swap", "rate": 0.3}], "distinct id"),
        ([{"name": "char_swap", "rate": 0.1, "id": "a.b"}], "no '.'"),
        ({"name": "char_swap", "rate": 0.1}, "must be a list"),
        (["char_swap"], "must be a mapping"),
    ],
)
def test_bad_perturbation_configs_are_refused_with_one_sentence(config, message):
    with pytest.raises(ConfigError, match=message) as info:
        parse_perturbations(config)
    assert str(info.value).count(". ") == 0 and str(info.value).endswith(".")


def test_robustness_summary_columns_and_drop_sign():
    clean = {"quality.f1": 0.8, "quality.precision": 0.9}
    perturbed = {"char_swap": {"quality.f1": 0.6, "quality.precision": 0.7}, "lowercase": {"quality.f1": 0.8}}
    row = robustness_summary(clean, perturbed, "f1", higher_is_better=True)
    assert row["robust.char_swap.f1"] == 0.6 and row["robust.char_swap.precision"] == 0.7
    assert row["robust.char_swap.drop"] == pytest.approx(0.25)
    assert row["robust.lowercase.drop"] == 0.0
    assert row["robust.mean_drop"] == pytest.approx(0.125)
    # Perplexity: lower is better, so a rise is a positive (worse) drop.
    row = robustness_summary({"quality.ppl": 20.0}, {"char_swap": {"quality.ppl": 30.0}}, "quality.ppl", False)
    assert row["robust.char_swap.ppl"] == 30.0
    assert row["robust.mean_drop"] == pytest.approx(0.5)
    assert math.isnan(robustness_summary({"f1": 0.0}, {"x": {"f1": 0.0}}, "f1", True)["robust.mean_drop"])
    assert math.isnan(robustness_summary({"f1": 0.5}, {}, "f1", True)["robust.mean_drop"])


def test_language_model_drop_is_the_nll_increase_in_nats_and_stays_interpretable():
    """ln(ppl) = NLL, so the drop in nats is ln(ppl_perturbed / ppl_clean): a perplexity going
    from 50 to 8.8e5 (a relative 'drop' of 1.8e4) is a drop of ln(1.76e4) = 9.8 nats."""
    clean = {"quality.ppl": 50.0, "quality.nll": math.log(50.0)}
    perturbed = {"uppercase": {"quality.ppl": 8.8e5, "quality.nll": math.log(8.8e5)},
                 "char_swap": {"quality.ppl": 60.0, "quality.nll": math.log(60.0)}}
    row = robustness_summary(clean, perturbed, "quality.nll", False, drop="difference")
    assert row["robust.uppercase.drop"] == pytest.approx(math.log(8.8e5 / 50.0))
    assert row["robust.char_swap.drop"] == pytest.approx(math.log(60.0 / 50.0))
    assert row["robust.mean_drop"] == pytest.approx((math.log(8.8e5 / 50) + math.log(1.2)) / 2)
    assert row["robust.uppercase.ppl"] == 8.8e5  # the perplexities themselves stay in the row


def test_causal_lm_rows_use_the_nll_difference():
    from compbench.tasks.lm import CausalLMTask
    from compbench.tasks.ner import TokenClassificationTask

    assert CausalLMTask.robust_drop == ("quality.nll", "difference")
    assert TokenClassificationTask.robust_drop is None  # relative change of the main metric


def test_robust_columns_are_registered_with_direction():
    assert spec_for("robust.char_swap.f1").higher_is_better is True
    assert spec_for("robust.char_swap.f1_PER").higher_is_better is True
    assert spec_for("robust.char_swap_heavy.ppl").higher_is_better is False
    assert spec_for("robust.lowercase.rougeL").higher_is_better is True
    assert spec_for("robust.lowercase.drop").higher_is_better is False
    assert spec_for("robust.mean_drop").higher_is_better is False


def test_robustness_summary_reports_the_clean_scores_the_drops_are_relative_to():
    clean = {"quality.ppl": 20.0, "quality.nll": 3.0, "quality.token_accuracy": 0.4}
    perturbed = {"char_swap": {"quality.ppl": 30.0, "quality.nll": 3.4, "quality.token_accuracy": 0.3}}
    row = robustness_summary(clean, perturbed, "quality.nll", False, drop="difference",
                             clean_metrics=["quality.ppl", "quality.nll"])
    assert row["robust.clean.ppl"] == 20.0 and row["robust.clean.nll"] == 3.0
    assert "robust.clean.token_accuracy" not in row
    assert all(spec_for(column) is not None for column in row)


def test_ood_columns_per_set_and_mean():
    from compbench.metrics.robustness import ood_columns

    row = ood_columns({"yor": 0.5, "hau": 0.7}, "quality.f1")
    assert row == {"robust.ood.yor.f1": 0.5, "robust.ood.hau.f1": 0.7, "robust.ood.mean_f1": pytest.approx(0.6)}
    assert all(spec_for(column) is not None for column in row)
    assert ood_columns({}, "quality.f1") == {}
