"""Calibration metrics against independent references: loops over bins, torch, torchmetrics."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchmetrics.functional.classification import multiclass_calibration_error

from compbench.errors import ConfigError
from compbench.metrics.calibration import (
    CalibrationAccumulator,
    LogitReservoir,
    calibration_metrics,
    fit_temperature,
    temperature_scaled_metrics,
)
from compbench.metrics.registry import spec_for


def reference_ece_mce(confidence, correct, n_bins):
    """Straightforward Guo et al. ECE/MCE: loop over bins (lo, hi], first bin also takes 0."""
    edges = np.linspace(0, 1, n_bins + 1)
    ece, mce, n = 0.0, 0.0, len(confidence)
    for k in range(n_bins):
        lo, hi = edges[k], edges[k + 1]
        in_bin = [(c > lo or (k == 0 and c >= lo)) and c <= hi for c in confidence]
        members = [i for i, inside in enumerate(in_bin) if inside]
        if not members:
            continue
        acc = sum(correct[i] for i in members) / len(members)
        conf = sum(confidence[i] for i in members) / len(members)
        ece += len(members) / n * abs(acc - conf)
        mce = max(mce, abs(acc - conf))
    return ece, mce


def reference_ece_mass(confidence, correct, n_bins):
    order = sorted(range(len(confidence)), key=lambda i: confidence[i])
    size, extra = divmod(len(order), n_bins)
    ece, start = 0.0, 0
    for k in range(n_bins):
        members = order[start : start + size + (1 if k < extra else 0)]
        start += len(members)
        if members:
            gap = abs(sum(correct[i] for i in members) - sum(confidence[i] for i in members)) / len(members)
            ece += len(members) / len(order) * gap
    return ece


def random_batch(n=600, classes=7, scale=3.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, classes, generator=g) * scale
    labels = torch.randint(0, classes, (n,), generator=g)
    # Make the model right more often than chance so that bins hold both outcomes.
    labels = torch.where(torch.rand(n, generator=g) < 0.5, logits.argmax(-1), labels)
    return logits, labels


def accumulate(logits, labels, batch=128, **kwargs):
    acc = CalibrationAccumulator(**kwargs)
    for start in range(0, len(labels), batch):
        acc.update(logits[start : start + batch], labels[start : start + batch])
    return acc


@pytest.mark.parametrize("n_bins", [1, 5, 15])
def test_ece_mce_match_loop_reference_and_torchmetrics(n_bins):
    logits, labels = random_batch()
    metrics = calibration_metrics(accumulate(logits, labels), n_bins=n_bins)
    probs = logits.double().softmax(-1)
    confidence = probs.max(-1).values.tolist()
    correct = (probs.argmax(-1) == labels).tolist()
    ece, mce = reference_ece_mce(confidence, correct, n_bins)
    assert metrics["calib.ece"] == pytest.approx(ece, abs=1e-6)
    assert metrics["calib.mce"] == pytest.approx(mce, abs=1e-6)
    assert metrics["calib.ece_mass"] == pytest.approx(reference_ece_mass(confidence, correct, n_bins), abs=1e-6)
    # torchmetrics bins [lo, hi) instead of (lo, hi]: identical when no confidence sits on an edge.
    tm = multiclass_calibration_error(logits, labels, num_classes=logits.shape[1], n_bins=n_bins)
    assert metrics["calib.ece"] == pytest.approx(float(tm), abs=1e-5)
    tm_max = multiclass_calibration_error(logits, labels, num_classes=logits.shape[1], n_bins=n_bins, norm="max")
    assert metrics["calib.mce"] == pytest.approx(float(tm_max), abs=1e-5)


def test_single_bin_ece_is_gap_between_mean_confidence_and_accuracy():
    logits, labels = random_batch(seed=3)
    metrics = calibration_metrics(accumulate(logits, labels), n_bins=1)
    assert metrics["calib.ece"] == pytest.approx(abs(metrics["calib.accuracy"] - metrics["calib.confidence"]))
    assert metrics["calib.ece_mass"] == pytest.approx(metrics["calib.ece"])
    assert metrics["calib.mce"] == pytest.approx(metrics["calib.ece"])


def test_perfectly_calibrated_predictor_has_near_zero_ece():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(40_000, 5, generator=g) * 2
    # Labels drawn from the predicted distribution itself: calibrated by construction.
    labels = torch.multinomial(logits.softmax(-1), 1, generator=g).squeeze(1)
    metrics = calibration_metrics(accumulate(logits, labels, batch=8192))
    assert metrics["calib.ece"] < 0.015
    assert metrics["calib.ece_mass"] < 0.015
    over_confident = calibration_metrics(accumulate(logits * 3, labels, batch=8192))
    assert over_confident["calib.ece"] > 5 * metrics["calib.ece"]


def test_all_correct_confident_predictions():
    labels = torch.arange(10) % 4
    logits = F.one_hot(labels, 4).float() * 100.0
    metrics = calibration_metrics(accumulate(logits, labels))
    assert metrics["calib.accuracy"] == 1.0
    assert metrics["calib.confidence"] == pytest.approx(1.0)
    for column in ("calib.ece", "calib.ece_mass", "calib.mce", "calib.brier", "calib.nll"):
        assert metrics[column] == pytest.approx(0.0, abs=1e-6), column
    # Confidently wrong: ECE 1, Brier 2 (the maximum), NLL ~ 100 nats and finite.
    wrong = calibration_metrics(accumulate(logits, (labels + 1) % 4))
    assert wrong["calib.ece"] == pytest.approx(1.0) and wrong["calib.mce"] == pytest.approx(1.0)
    assert wrong["calib.brier"] == pytest.approx(2.0)
    assert wrong["calib.nll"] == pytest.approx(100.0, rel=1e-4)


def test_nll_equals_cross_entropy_and_brier_equals_one_hot_computation():
    logits, labels = random_batch(n=300, classes=6, seed=2)
    metrics = calibration_metrics(accumulate(logits, labels, batch=64))
    assert metrics["calib.nll"] == pytest.approx(float(F.cross_entropy(logits.double(), labels)), rel=1e-5)
    probs = logits.double().softmax(-1)
    brier = ((probs - F.one_hot(labels, 6).double()) ** 2).sum(-1).mean()
    assert metrics["calib.brier"] == pytest.approx(float(brier), rel=1e-5)


def test_large_vocabulary_is_chunked_and_exact():
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(400, 50_257, generator=g)
    labels = torch.randint(0, 50_257, (400,), generator=g)
    acc = accumulate(logits, labels, batch=400)
    assert len(acc) == 400
    metrics = calibration_metrics(acc)
    assert metrics["calib.nll"] == pytest.approx(float(F.cross_entropy(logits, labels)), rel=1e-5)


def test_temperature_fit_recovers_known_temperature():
    g = torch.Generator().manual_seed(5)
    true_logits = torch.randn(4000, 10, generator=g) * 2
    labels = torch.multinomial(true_logits.softmax(-1), 1, generator=g).squeeze(1)
    over_confident = true_logits * 2.5  # a model whose logits are 2.5x too sharp
    assert fit_temperature(over_confident, labels) == pytest.approx(2.5, rel=0.08)
    under_confident = true_logits * 0.5
    assert fit_temperature(under_confident, labels) == pytest.approx(0.5, rel=0.08)


def test_temperature_fit_works_under_inference_mode_and_improves_ece():
    g = torch.Generator().manual_seed(6)
    true_logits = torch.randn(6000, 8, generator=g) * 2
    labels = torch.multinomial(true_logits.softmax(-1), 1, generator=g).squeeze(1)
    logits = true_logits * 3
    reservoir = LogitReservoir(max_tokens=1500, seed=0)
    with torch.inference_mode():
        for start in range(0, 3000, 500):  # "dev" half
            reservoir.add(logits[start : start + 500], labels[start : start + 500])
        temperature = reservoir.fit_temperature()
    assert len(reservoir) == 1500
    assert temperature == pytest.approx(3.0, rel=0.15)
    raw = accumulate(logits[3000:], labels[3000:])
    scaled = accumulate(logits[3000:], labels[3000:], temperature=temperature)
    ts = temperature_scaled_metrics(scaled)
    base = calibration_metrics(raw)
    assert ts["calib.temperature"] == temperature
    assert ts["calib.ece_ts"] < base["calib.ece"] / 2
    assert ts["calib.nll_ts"] < base["calib.nll"]


def test_reservoir_sample_is_uniform_over_the_stream():
    reservoir = LogitReservoir(max_tokens=500, seed=1)
    for start in range(0, 10_000, 1000):
        ids = torch.arange(start, start + 1000)
        reservoir.add(torch.zeros(1000, 2), ids)
    _, labels = reservoir.tensors()
    assert len(set(labels.tolist())) == 500
    # Every tenth of the stream is represented about equally (expected 50 each).
    per_chunk = np.bincount(labels.numpy() // 1000, minlength=10)
    assert per_chunk.min() > 25 and per_chunk.max() < 80


def test_npz_round_trip(tmp_path):
    logits, labels = random_batch(seed=7)
    acc = accumulate(logits, labels, temperature=1.7)
    path = acc.save(tmp_path)
    assert path == tmp_path / "calibration.npz"
    loaded = CalibrationAccumulator.load(tmp_path)
    assert loaded.temperature == 1.7
    for name, values in acc.arrays().items():
        np.testing.assert_array_equal(loaded.arrays()[name], values)
    assert calibration_metrics(loaded) == calibration_metrics(acc)
    with np.load(path) as data:
        assert calibration_metrics(dict(data)) == calibration_metrics(acc)


def test_bad_inputs_are_refused():
    with pytest.raises(ConfigError):
        CalibrationAccumulator(temperature=0.0)
    with pytest.raises(ConfigError):
        calibration_metrics(accumulate(*random_batch()), n_bins=0)
    with pytest.raises(ValueError, match="-100"):
        CalibrationAccumulator().update(torch.zeros(2, 3), torch.tensor([0, -100]))
    with pytest.raises(ValueError, match="no tokens"):
        calibration_metrics(CalibrationAccumulator())


def test_columns_are_registered():
    assert spec_for("calib.ece").higher_is_better is False
    assert spec_for("calib.accuracy").higher_is_better is True
    assert spec_for("calib.temperature").higher_is_better is None
    for column in calibration_metrics(accumulate(*random_batch())):
        assert spec_for(column) is not None, column


def test_reused_log_probs_and_chunk_size_leave_every_statistic_unchanged(monkeypatch):
    """The LM task passes its own log-softmax (``log_probs=``) and updates are chunked into
    small row blocks: both must give exactly the per-token values of one plain computation."""
    import compbench.metrics.calibration as calibration

    logits, labels = random_batch(n=300, classes=5000, scale=4.0, seed=3)
    log_probs = F.log_softmax(logits, dim=-1)
    monkeypatch.setattr(calibration, "_MAX_CHUNK_ELEMENTS", 1 << 30)  # one chunk: the reference
    reference = accumulate(logits, labels, batch=300).arrays()
    reference_t = accumulate(logits, labels, batch=300, temperature=1.7).arrays()
    monkeypatch.setattr(calibration, "_MAX_CHUNK_ELEMENTS", 7 * 5000 + 3)  # 7-row chunks
    for temperature, expected in ((1.0, reference), (1.7, reference_t)):
        acc = CalibrationAccumulator(temperature=temperature)
        acc.update(logits, labels, log_probs=log_probs)  # reused at T=1, ignored at T != 1
        for name, values in acc.arrays().items():
            assert np.array_equal(values, expected[name]), (temperature, name)
    # The reuse really happens: wrong log-probs change the values at T=1 (and only there).
    acc = CalibrationAccumulator()
    acc.update(logits, labels, log_probs=log_probs - 1.0)
    assert not np.array_equal(acc.arrays()["nll"], reference["nll"])
