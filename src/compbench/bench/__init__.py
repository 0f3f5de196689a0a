"""``compbench-bench`` / ``python -m compbench.bench``: the suite's performance benchmarks.

One module per benchmark (``overhead``, ``speed``, ``size``, ``teacher_reuse``, ``contrastive``,
``scaling``, ``memory``), the timing primitives every one of them uses (``timing``), what several
build (``fixtures``: shapes, batches, a method's export reloaded through the pipeline's own
lifecycle, ``methods.lifecycle.compress``), the summary writer (``summary``) and the command
(``cli``). ``python -m compbench.bench.method_zoo`` trains and exports every method config on the
GPT-2-small shape and checks each reload; ``python -m compbench.bench.contrastive`` times
contrastive QAT's step on other shapes and ablations.

Writes one JSON file per benchmark under ``--out`` (default ``results/perf/``) and a Markdown
summary (``SUMMARY.md``) of every JSON there. Each JSON holds the command, the date, the machine
(CPU model and flags, cores, torch threads, library versions), the load average before and after,
every raw timing, the medians and the ratios.

How every figure is measured: the things compared are run **side by side in this one process,
interleaved** (each round runs each of them once, the order rotating from round to round, after
untimed warm-up), and a figure is a **ratio of medians over >= 7 rounds** (``--rounds``), because
absolute times on a shared machine drift while ratios of interleaved timings move much less.
Per-round paired ratios are kept in the JSON too. Sizes are bytes on disk of real exports.

Benchmarks (``--only a,b``; ``--quick`` runs all of them on reduced shapes in ~2 minutes,
to check the command itself: its figures are not meant to be quoted):

* ``train_overhead``: the LightningModule step (method hooks, logging, scheduler, Lightning's
  loop) vs a plain PyTorch loop (same forward/backward/AdamW/scheduler, same batches), stepped
  alternately in one process; tiny and GPT-2-small shapes. Target <= 1.05.
* ``eval_overhead``: compbench's quality evaluation pass (``task.evaluate`` with the calibration
  accumulators, as ``quality_and_calibration`` runs it on the test split) vs a bare
  ``torch.inference_mode()`` loop over the same batches. Target <= 1.10.
* ``speedup``: fp32 vs compressed models at batch 1 and 8 x 128 tokens, 1 and 2 threads, on a
  GPT-2-small and an XLM-R-base shape (random weights: speed does not depend on their values),
  timed with ``compbench.metrics.efficiency.measure_latency`` in the groups of ``SPEED_GROUPS``;
  compbench's exports (reloaded) next to the libraries' own calls (torch.ao ``quantize_dynamic``,
  torchao ``quantize_``), eager and ``torch.compile``d. Target: compbench's best int8 >= the
  libraries' best int8.
* ``int8_parity``: compbench's int8 export vs torch.ao ``quantize_dynamic`` alone, per
  ``speedup`` setting where it trailed (1 thread), 3x the rounds, with the per-round spread and an operator
  count of each forward (tells an overhead from noise when ``speedup``'s int8 ratio is < 1).
* ``size``: export bytes / fp32 export bytes per method at the GPT-2-small shape (QAT 2-2-8
  target > 14.4x).
* ``teacher_reuse``: wall time of a 6-method sweep of the default tiny run with the teacher
  cache vs without (every run fine-tunes its own teacher). Target <= 0.3. Each round is 12 full
  runs (7 rounds by default, ``--teacher-rounds``; ~10 minutes).
* ``contrastive_overhead``: ``contrastive_qat`` step / ``qat`` step (GPT-2-small shape, both
  through ``method_training_step``). Target <= 1.10.
* ``scaling``: training-step and evaluation-forward time vs sequence length and width, with
  log-log slopes.
* ``memory``: peak resident memory (the child's own ``VmHWM``) of one ``compbench`` run as a
  child process: the tiny default and a GPT-2-small-shaped evaluation.
"""

from compbench.bench.cli import BENCHMARKS, main
from compbench.bench.timing import loglog_slope, ratio

__all__ = ["BENCHMARKS", "loglog_slope", "main", "ratio"]
