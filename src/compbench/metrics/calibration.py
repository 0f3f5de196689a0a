"""Calibration of top-1 predictions: ECE (equal-width and equal-mass bins), MCE, Brier, NLL.

The caller streams ``logits [N, C]`` and integer ``labels [N]`` of the *valid* positions only
(tokens flattened, ``-100`` dropped) into a :class:`CalibrationAccumulator`. It keeps four
numbers per token, never the logits, so a 50k-word vocabulary costs the same as 5 NER tags:

* ``confidence`` -- max softmax probability;
* ``correct`` -- argmax == label;
* ``p_true`` -- probability of the label (and ``nll = -log p_true``, kept separately so that a
  probability that underflows to 0 still gives a finite NLL);
* ``sum_sq`` -- ``sum_k p_k**2``, so the multi-class Brier score
  ``sum_k (p_k - y_k)**2 = sum_sq - 2 p_true + 1`` is exact without storing the probabilities.

Temperature scaling (Guo et al. 2017, "On Calibration of Modern Neural Networks") is fitted on a
capped random sample of dev tokens (:class:`LogitReservoir`, :func:`fit_temperature`); the test
pass then feeds a second accumulator built with ``temperature=T`` in the same loop::

    reservoir = LogitReservoir(max_tokens=4096, seed=seed)
    for logits, labels in dev_batches:             # valid positions only
        reservoir.add(logits, labels)
    temperature = reservoir.fit_temperature()
    raw, scaled = CalibrationAccumulator(), CalibrationAccumulator(temperature=temperature)
    for logits, labels in test_batches:
        raw.update(logits, labels)
        scaled.update(logits, labels)
    row |= calibration_metrics(raw) | temperature_scaled_metrics(scaled)
    raw.save(run_dir)                              # run_dir/calibration.npz
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from compbench.errors import ConfigError

#: File written by :meth:`CalibrationAccumulator.save` inside a run directory.
CALIBRATION_FILE = "calibration.npz"
#: Per-token arrays kept by the accumulator (and stored in the npz).
FIELDS = ("confidence", "correct", "p_true", "nll", "sum_sq")
#: Rows of logits converted to probabilities at once: bounds the float32 work buffers of
#: ``update`` to 4 MB each, whatever the batch size and vocabulary. Small on purpose: buffers
#: this size stay in cache and glibc reuses them from its heap, while the former 64 MB buffers
#: were fresh ``mmap``s, page-faulted on every call (``compbench.bench`` eval_overhead profile).
#: Every statistic is row-wise, so the chunk size does not change any value.
_MAX_CHUNK_ELEMENTS = 1 << 20




class CalibrationAccumulator:
    """Streams batches of logits and keeps per-token calibration statistics.

    Args:
        temperature: logits are divided by it before the softmax (1.0 = raw model).
    """

    def __init__(self, temperature: float = 1.0) -> None:
        if not (math.isfinite(temperature) and temperature > 0):
            raise ConfigError(f"calibration temperature must be a finite positive number, got {temperature}.")
        self.temperature = float(temperature)
        self._parts: dict[str, list[np.ndarray]] = {name: [] for name in FIELDS}

    @torch.no_grad()
    def update(self, logits: torch.Tensor, labels: torch.Tensor, log_probs: torch.Tensor | None = None) -> None:
        """Add a batch: ``logits [N, C]`` and integer ``labels [N]`` of valid positions only.

        ``log_probs``: ``F.log_softmax(logits.float(), -1)`` when the caller has it already (a
        language model's NLL needs it); reused instead of recomputed when ``temperature == 1``
        (the values are the same), ignored otherwise.
        """
        if logits.dim() != 2 or labels.dim() != 1 or logits.shape[0] != labels.shape[0]:
            raise ValueError(
                f"expected logits [N, C] and labels [N] of valid positions, got {tuple(logits.shape)} "
                f"and {tuple(labels.shape)}; flatten the tokens and drop ignored (-100) positions first."
            )
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= logits.shape[1]):
            raise ValueError("labels must lie in [0, C); drop ignored (-100) positions before update().")
        labels = labels.to(logits.device)
        rows = max(1, _MAX_CHUNK_ELEMENTS // max(1, logits.shape[1]))
        if log_probs is not None and (self.temperature != 1.0 or log_probs.shape != logits.shape):
            log_probs = None
        for start in range(0, logits.shape[0], rows):
            chunk = slice(start, start + rows)
            stats = _token_stats(logits[chunk], labels[chunk], self.temperature,
                                 None if log_probs is None else log_probs[chunk])
            for name, values in stats.items():
                self._parts[name].append(values)

    def __len__(self) -> int:
        return sum(len(part) for part in self._parts["confidence"])

    def arrays(self) -> dict[str, np.ndarray]:
        """The per-token arrays accumulated so far (concatenated)."""
        dtypes = {"correct": bool}
        return {
            name: np.concatenate(parts) if parts else np.zeros(0, dtype=dtypes.get(name, np.float64))
            for name, parts in self._parts.items()
        }

    def save(self, path: str | Path) -> Path:
        """Write the arrays to ``path`` (a ``.npz`` file, or a directory: ``<dir>/calibration.npz``)."""
        path = Path(path)
        if path.suffix != ".npz":
            path = path / CALIBRATION_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, temperature=np.float64(self.temperature), **self.arrays())
        return path

    @classmethod
    def load(cls, path: str | Path) -> CalibrationAccumulator:
        """Read a file written by :meth:`save` (pickles are refused)."""
        path = Path(path)
        if path.suffix != ".npz":
            path = path / CALIBRATION_FILE
        with np.load(path, allow_pickle=False) as data:
            acc = cls(temperature=float(data["temperature"]))
            for name in FIELDS:
                acc._parts[name] = [data[name]]
        return acc


def _token_stats(logits: torch.Tensor, labels: torch.Tensor, temperature: float,
                 log_probs: torch.Tensor | None = None) -> dict[str, np.ndarray]:
    """Per-token statistics of one chunk, computed in float32 on the logits' device
    (``log_probs``: the chunk's log-softmax at ``temperature`` 1, if already computed)."""
    if log_probs is None:
        logits = logits.float()
        if temperature != 1.0:  # skip a copy of the [N, C] chunk in the common case
            logits = logits / temperature
        log_probs = F.log_softmax(logits, dim=-1)
    else:
        log_probs = log_probs.float()
    max_log_prob, prediction = log_probs.max(dim=-1)
    log_p_true = log_probs.gather(1, labels.long().unsqueeze(1)).squeeze(1)
    sum_sq = log_probs.mul(2).exp_().sum(dim=-1)  # exp(2 log p) = p^2, without a second [N, C] buffer

    def to_numpy(values: torch.Tensor) -> np.ndarray:
        return values.detach().to("cpu", torch.float64).numpy()

    return {
        "confidence": to_numpy(max_log_prob.exp()),
        "correct": (prediction == labels).cpu().numpy(),
        "p_true": to_numpy(log_p_true.exp()),
        "nll": to_numpy(-log_p_true),
        "sum_sq": to_numpy(sum_sq),
    }


def _as_arrays(source: CalibrationAccumulator | Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    arrays = source.arrays() if isinstance(source, CalibrationAccumulator) else dict(source)
    missing = [name for name in FIELDS if name not in arrays]
    if missing:
        raise ValueError(f"calibration arrays lack {missing}; pass a CalibrationAccumulator or its arrays().")
    arrays = {name: np.asarray(arrays[name]) for name in FIELDS}
    if len(arrays["confidence"]) == 0:
        raise ValueError("no tokens were accumulated; calibration metrics need at least one scored position.")
    return arrays


def _binned_errors(
    confidence: np.ndarray, correct: np.ndarray, bin_ids: np.ndarray, n_bins: int
) -> tuple[float, float]:
    """(ECE, MCE) given each token's bin: ECE = sum_b |B_b|/N |acc_b - conf_b|, MCE = max over non-empty bins."""
    counts = np.bincount(bin_ids, minlength=n_bins).astype(np.float64)
    conf_sum = np.bincount(bin_ids, weights=confidence, minlength=n_bins)
    acc_sum = np.bincount(bin_ids, weights=correct.astype(np.float64), minlength=n_bins)
    filled = counts > 0
    gaps = np.abs(acc_sum[filled] - conf_sum[filled]) / counts[filled]
    ece = float(np.sum(gaps * counts[filled]) / counts.sum())
    return ece, float(gaps.max())


def equal_width_bins(confidence: np.ndarray, n_bins: int) -> np.ndarray:
    """Bin of each confidence among ``n_bins`` equal-width bins ``(k/n, (k+1)/n]`` (first bin closed)."""
    inner_edges = np.linspace(0.0, 1.0, n_bins + 1)[1:-1]
    return np.searchsorted(inner_edges, confidence, side="left")


def equal_mass_bins(confidence: np.ndarray, n_bins: int) -> np.ndarray:
    """Bin of each confidence among ``n_bins`` bins holding (nearly) equal numbers of tokens.

    Sorted by confidence (stable, so ties split deterministically) and cut into ``n_bins``
    consecutive groups whose sizes differ by at most one (Nixon et al. 2019, adaptive ECE).
    """
    order = np.argsort(confidence, kind="stable")
    bin_ids = np.empty(len(confidence), dtype=np.int64)
    for k, members in enumerate(np.array_split(order, n_bins)):
        bin_ids[members] = k
    return bin_ids


def calibration_metrics(
    source: CalibrationAccumulator | Mapping[str, np.ndarray], n_bins: int = 15
) -> dict[str, float]:
    """Calibration columns of accumulated predictions.

    Equal-width ECE/MCE match ``torchmetrics`` top-label calibration error except for tokens with
    confidence exactly on a bin edge (torchmetrics bins ``[lo, hi)`` and gives 1.0 a bin of its
    own; we use ``(lo, hi]`` as Guo et al.). They are computed here because torchmetrics needs the
    full probability matrix, which we never keep, and has no equal-mass variant.

    Args:
        source: an accumulator, or its ``arrays()`` (e.g. a loaded ``calibration.npz``).
        n_bins: number of confidence bins for the ECE/MCE variants (15 as Guo et al. 2017).
    """
    if not isinstance(n_bins, int) or n_bins < 1:
        raise ConfigError(f"n_bins must be a positive integer, got {n_bins!r}.")
    arrays = _as_arrays(source)
    confidence, correct = arrays["confidence"], arrays["correct"].astype(bool)
    ece, mce = _binned_errors(confidence, correct, equal_width_bins(confidence, n_bins), n_bins)
    ece_mass, _ = _binned_errors(confidence, correct, equal_mass_bins(confidence, n_bins), n_bins)
    brier = arrays["sum_sq"] - 2.0 * arrays["p_true"] + 1.0
    return {
        "calib.ece": ece,
        "calib.ece_mass": ece_mass,
        "calib.mce": mce,
        "calib.brier": float(np.mean(brier)),
        "calib.nll": float(np.mean(arrays["nll"])),
        "calib.confidence": float(np.mean(confidence)),
        "calib.accuracy": float(np.mean(correct)),
    }


def temperature_scaled_metrics(scaled: CalibrationAccumulator, n_bins: int = 15) -> dict[str, float]:
    """``calib.ece_ts``, ``calib.nll_ts`` and ``calib.temperature`` of an accumulator built with
    ``temperature=T`` (the temperature fitted on dev tokens)."""
    metrics = calibration_metrics(scaled, n_bins)
    return {
        "calib.ece_ts": metrics["calib.ece"],
        "calib.nll_ts": metrics["calib.nll"],
        "calib.temperature": scaled.temperature,
    }


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, max_iter: int = 100) -> float:
    """Temperature ``T`` minimising the NLL of ``softmax(logits / T)`` (Guo et al. 2017).

    Optimises ``log T`` (so T stays positive) with LBFGS on all given tokens at once; pass a
    capped sample (:class:`LogitReservoir`) for large vocabularies. Works when called under
    ``torch.no_grad`` or ``torch.inference_mode`` (as in a Lightning test loop).

    Args:
        logits: ``[N, C]`` logits of valid dev positions.
        labels: ``[N]`` integer labels.
        max_iter: LBFGS iterations.
    """
    if logits.dim() != 2 or labels.shape != logits.shape[:1] or logits.shape[0] == 0:
        raise ValueError(f"fit_temperature needs logits [N, C] and labels [N] with N > 0, got {tuple(logits.shape)}.")
    with torch.inference_mode(False), torch.enable_grad():
        # Clone out of inference mode: autograd cannot save inference tensors for backward.
        logits = logits.detach().float().clone()
        labels = labels.detach().long().clone().to(logits.device)
        log_t = torch.zeros((), device=logits.device, requires_grad=True)
        optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=max_iter, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            loss = F.cross_entropy(logits / log_t.exp(), labels)
            loss.backward()
            return loss

        optimizer.step(closure)
    temperature = float(log_t.detach().exp())
    if not math.isfinite(temperature):
        raise ValueError("temperature fitting diverged; check the dev logits for NaN/inf values.")
    return temperature


class LogitReservoir:
    """A uniform random sample of at most ``max_tokens`` (logits, label) rows from a stream.

    Each row gets a random key and the rows with the smallest keys are kept (bottom-k
    sampling), so the sample is uniform over the whole stream without knowing its length.
    Logits are stored as float32 on CPU: ``max_tokens * C * 4`` bytes (4096 x 50k = 0.8 GB).

    Args:
        max_tokens: cap of the sample.
        seed: seed of the sampling keys.
    """

    def __init__(self, max_tokens: int = 4096, seed: int = 0) -> None:
        if not isinstance(max_tokens, int) or max_tokens < 1:
            raise ConfigError(f"the temperature-fitting sample needs max_tokens >= 1, got {max_tokens!r}.")
        self.max_tokens = max_tokens
        self._generator = torch.Generator().manual_seed(seed)
        self._keys = torch.empty(0)
        self._logits: torch.Tensor | None = None
        self._labels = torch.empty(0, dtype=torch.long)

    @torch.no_grad()
    def add(self, logits: torch.Tensor, labels: torch.Tensor, log_probs: torch.Tensor | None = None) -> None:
        """Offer a batch of valid positions: ``logits [N, C]``, ``labels [N]`` (``log_probs``,
        which tasks may pass to any ``on_logits`` callback, is not needed here)."""
        keys = torch.rand(logits.shape[0], generator=self._generator)
        logits, labels = logits.detach().to("cpu", torch.float32), labels.detach().to("cpu", torch.long)
        if self._logits is None:
            # .to() may return the caller's own tensors; the sample must not alias them.
            logits, labels = logits.clone(), labels.clone()
        else:
            keys = torch.cat([self._keys, keys])
            logits = torch.cat([self._logits, logits])
            labels = torch.cat([self._labels, labels])
        if len(keys) > self.max_tokens:
            keep = torch.topk(keys, self.max_tokens, largest=False).indices
            keys, logits, labels = keys[keep], logits[keep], labels[keep]
        self._keys, self._logits, self._labels = keys, logits, labels

    def __len__(self) -> int:
        return len(self._keys)

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The sampled ``(logits [n, C], labels [n])``."""
        if self._logits is None:
            raise ValueError("the temperature-fitting sample is empty; add() dev batches first.")
        return self._logits, self._labels

    def fit_temperature(self, max_iter: int = 100) -> float:
        """:func:`fit_temperature` on the sample."""
        return fit_temperature(*self.tensors(), max_iter=max_iter)
