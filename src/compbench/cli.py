"""``compbench``: the Hydra app. One run (or a multirun sweep) of fine-tune → compress → evaluate.

    compbench                                   # built-in smoke benchmark, tiny model, < 3 min on a CPU
    compbench model=gpt2 task=wikitext2 method=ptq_dynamic_int8
    compbench -m method=none,prune_magnitude method.sparsity=0.5,0.8   # a sweep
    compbench -m ... (same command again)       # resumes: skips configs with an ok row
    compbench -m ... hydra/launcher=joblib      # parallel local jobs (docs/sweeps.md)

Configs live in ``conf/`` at the repository root (``COMPBENCH_CONF_DIR`` overrides it); the
folder is looked up in :func:`main`, not at import. W&B runs offline unless
``logger.wandb.mode=online``: the mode goes to ``wandb.init``, the process environment is left alone.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

log = logging.getLogger("compbench")
_exit_code = 0


def teacher_baseline_row(db: Path, row: dict[str, Any]) -> dict[str, Any] | None:
    """The newest ok ``method=none`` row of the same teacher in the store (the fp32 baseline)."""
    from compbench.records.store import ResultsStore

    if not row.get("teacher_hash") or not Path(db).exists():
        return None
    same = [r for r in ResultsStore(db).rows() if r.get("method") == "none" and r.get("status") == "ok"
            and r.get("teacher_hash") == row["teacher_hash"]]
    return max(same, key=lambda r: str(r.get("started_at")), default=None)


def sweep_label(cfg: DictConfig) -> str:
    """``sweep_id`` if set, else in a multirun the sweep folder's name (groups the sweep's rows)."""
    if cfg.get("sweep_id"):
        return str(cfg.sweep_id)
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode == RunMode.MULTIRUN:
        return Path(hydra_cfg.sweep.dir).name
    return ""


def debug_choice() -> str:
    """The ``debug`` config chosen on the command line (``fast``), else "" (the row's ``debug`` column)."""
    choice = HydraConfig.get().runtime.choices.get("debug")
    return str(choice) if choice and str(choice) != "null" else ""


def skip_if_done(cfg: DictConfig) -> dict[str, Any] | None:
    """In a multirun, the stored ok row of this config when the job can be skipped (resuming the
    sweep), else None. A single run always computes: running one config is an explicit request."""
    from compbench.training.plan import run_fingerprint
    from compbench.training.resume import done_row

    if cfg.get("force") or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    try:  # keyed by config and data: a done config whose files were edited runs again
        hash_, _ = run_fingerprint(cfg)
    except Exception:  # noqa: BLE001 - a broken config or data is reported by the run itself
        return None
    return done_row(Path(cfg.paths.db), hash_)


def app(cfg: DictConfig, conf_dir: Path) -> float | None:
    """Hydra task function (bound to ``conf_dir`` by :func:`main`): one run, one row. A failed run
    in a sweep never stops the sweep: every exception is caught here, so Hydra's launchers go on
    with the next job."""
    from omegaconf import open_dict

    from compbench.console import setup_console
    from compbench.errors import Preempted, first_line, show_traceback, user_sentence
    from compbench.reporting.summary import run_summary
    from compbench.sweeps import write_outcome
    from compbench.training.pipeline import run

    global _exit_code
    setup_console(verbose=bool(cfg.get("verbose", False)))
    job_dir = Path(HydraConfig.get().runtime.output_dir)
    run_id = ""
    try:
        select_method_chain(cfg, conf_dir)
        done = skip_if_done(cfg)
        if done is not None:
            log.info("Skipped: config %s is done (ok run %s); force=true recomputes it",
                     done["config_hash"], done["run_id"])
            write_outcome(job_dir, "skipped", done["run_id"])
            return main_metric_value(done)
        with open_dict(cfg):
            cfg.sweep_id = sweep_label(cfg)
        row, error = run(cfg, conf_dir, debug=debug_choice())
        run_id = str(row.get("run_id", ""))
        # A failed run says why in one sentence below; a sweep prints one table at its end.
        if error is None and HydraConfig.get().mode == RunMode.RUN:
            print(run_summary(row, teacher_baseline_row(Path(cfg.paths.db), row), Path(cfg.paths.db)), flush=True)
    except Exception as exc:  # noqa: BLE001 - the last guard of a sweep job (e.g. the store is unreachable)
        row, error = {"error": f"{type(exc).__name__}: {first_line(exc)}"}, exc
        log.error("compbench job failed outside the run: %s", row["error"], exc_info=show_traceback())
    write_outcome(job_dir, "failed" if error is not None else "ok", run_id)
    if isinstance(error, Preempted):  # the machine is being taken away: end the sweep too
        print(f"compbench: {user_sentence(error)}", file=sys.stderr, flush=True)
        sys.exit(143)
    if error is not None:
        print(f"compbench: run failed: {user_sentence(error)}", file=sys.stderr, flush=True)
        if HydraConfig.get().mode == RunMode.RUN:
            _exit_code = 1
        return None
    return main_metric_value(row)


def select_method_chain(cfg: DictConfig, conf_dir: Path) -> None:
    """A ``method=[a,b]`` selection becomes ``method.stages`` here, where the config is composed,
    so that everything downstream (hashing, building the methods) needs nothing but the config."""
    from omegaconf import open_dict

    from compbench.methods import chain_as_stages, chain_names

    names = chain_names(HydraConfig.get().overrides.task)
    if names:
        with open_dict(cfg):
            cfg.method = chain_as_stages(cfg.method, names, conf_dir / "method")


def main_metric_value(row: dict[str, Any]) -> float | None:
    """A scalar for sweepers that optimise (Optuna): the task's main quality metric."""
    from compbench.reporting.summary import row_main_metric

    key = row_main_metric(row)
    return float(row[key]) if key is not None else None


def main() -> None:
    """Console-script entry point. A missing config tree, or a mistake on the command line (a
    misspelled group option or key, a missing mandatory value), is refused in one sentence
    before Hydra starts."""
    from compbench.configs import conf_dir as find_conf_dir
    from compbench.errors import ConfigError
    from compbench.preflight import check_command_line

    try:
        conf_dir = find_conf_dir()
    except ConfigError as exc:
        sys.exit(f"compbench: {exc}")
    problem = check_command_line(sys.argv[1:], conf_dir)
    if problem:
        sys.exit(f"compbench: {problem}")

    @hydra.main(version_base="1.3", config_path=str(conf_dir), config_name="config")
    def hydra_app(cfg: DictConfig) -> float | None:
        return app(cfg, conf_dir)

    hydra_app()
    sys.exit(_exit_code)


if __name__ == "__main__":
    main()
