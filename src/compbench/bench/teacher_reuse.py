"""Wall time of a method sweep with the teacher cache against without it (``teacher_reuse``)."""

from __future__ import annotations

import cProfile
import shutil
import tempfile
from pathlib import Path
from typing import Any

from compbench.bench.fixtures import compose_config, cumulative_s
from compbench.bench.timing import fd_silenced, interleaved, medians, quiet, ratio, threads


def bench_teacher_reuse(args) -> dict[str, Any]:
    """A 6-method sweep of the default tiny run (tiny AfriBERTa, smoke NER, 300 fine-tuning
    steps, full evaluation) run in-process through ``compbench.training.pipeline.run``: with the
    teacher cache (one fresh cache per sweep: the first run fine-tunes, five reuse) vs without
    (every run its own empty cache, so every run fine-tunes its teacher and trains its tokenizer).
    The two sweeps alternate, round after round, after one untimed run; 7 rounds (``--teacher-rounds``,
    12 full runs each, ~1-1.5 minutes per round on the shared 2-core machine); the per-round
    figures are in the JSON. A cProfile of one cached and one uncached run gives the sweep's
    expected ratio: with ``c`` a cached run's time and ``u`` an uncached one's, ``(u + 5 c) / (6 u)``
    (``expected_from_profile``); with ``c`` replaced by the cached run's evaluation alone (which no
    cache can skip), the floor of any teacher cache (``floor_from_profile``)."""
    from compbench.configs import conf_dir
    from compbench.training import evaluation, pipeline, trainer
    from compbench.training.pipeline import run

    # The stages whose cumulative time the profile reports (function objects: a renamed stage
    # fails here, it cannot silently read 0).
    stages = {"run": run, "prepare_teacher": pipeline.prepare_teacher, "train_phase": trainer.train_phase,
              "apply_methods": pipeline.apply_methods, "evaluate_all": evaluation.evaluate_all,
              "quality_and_calibration": evaluation.quality_and_calibration,
              "robustness": evaluation.robustness, "efficiency": evaluation.efficiency,
              "out_of_distribution": evaluation.out_of_distribution}

    conf = conf_dir()

    methods = ["none", "prune_magnitude", "prune_structured", "ptq_dynamic_int8", "ptq_weight_only", "ptq_half"]
    extra = ["logger=none", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]
    if args.quick:
        methods = methods[:2]
        extra += ["debug=fast", "evaluation.robustness.enabled=false", "evaluation.efficiency.repeats=2"]
    root = Path(tempfile.mkdtemp(prefix="compbench-bench-"))
    counter = iter(range(10**6))
    statuses: list[str] = []

    def sweep(shared: bool):
        out = root / f"sweep{next(counter)}"
        for m in methods:
            path = out if shared else out / m
            row, _ = run(compose_config([f"method={m}", f"paths.output_dir={path}", *extra]), conf)
            statuses.append(f"{m}:{row['status']}:{'reused' if row.get('teacher_reused') else 'trained'}")

    rounds = args.teacher_rounds
    with threads(1), quiet(), fd_silenced():
        # One untimed run first: lazy imports and first-call costs would otherwise land on
        # whichever sweep runs first.
        run(compose_config([f"method={methods[-1]}", f"paths.output_dir={root / 'warmup'}", *extra]), conf)
        times = interleaved({"with_cache": lambda: sweep(True), "without_cache": lambda: sweep(False)},
                            rounds, warmup=0)
        # Where a run's time goes, with and without the cached teacher: cProfile of one of each.
        profile = {}
        for label, path in (("cached_run", root / "warmup"), ("uncached_run", root / "profile_fresh")):
            profiler = cProfile.Profile()
            profiler.enable()
            run(compose_config([f"method={methods[-1]}", f"paths.output_dir={path}", *extra]), conf)
            profiler.disable()
            profile[label] = cumulative_s(profiler, stages)
    shutil.rmtree(root, ignore_errors=True)
    r = ratio(times, "with_cache", "without_cache")
    cached, uncached = profile["cached_run"]["run"], profile["uncached_run"]["run"]
    n = len(methods)
    return {"description": bench_teacher_reuse.__doc__, "methods": methods, "overrides": extra,
            "seconds": times, "median_s": medians(times), **r, "run_statuses": statuses,
            "profile_s": profile, "expected_from_profile": (uncached + (n - 1) * cached) / (n * uncached),
            "floor_from_profile": (uncached + (n - 1) * profile["cached_run"]["evaluate_all"]) / (n * uncached),
            "headline": {"name": "6-method sweep time with / without teacher cache", "value": r["ratio"],
                         "target": "<= 0.3", "met": r["ratio"] <= 0.3}}
