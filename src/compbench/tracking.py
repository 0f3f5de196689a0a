"""Experiment tracking: Lightning loggers per training phase, and one W&B run per compbench run.

``logger=csv`` and ``logger=tensorboard`` are plain Lightning loggers, instantiated per phase
inside the run directory. ``logger=wandb`` is one W&B run for the whole compbench run (not one
per phase): grouped by sweep, ``job_type`` = method, tagged with model and task; it gets the
resolved config, each phase's metrics through Lightning's ``WandbLogger`` (prefixed with the
phase), the final row as its summary, and the reliability data and predictions as artifacts.
Several loggers at once: ``compbench 'logger=[csv,wandb]'``.
"""

from __future__ import annotations

import logging
import netrc
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from compbench.errors import ConfigError

log = logging.getLogger(__name__)

WANDB_MODES = ("online", "offline", "disabled")
#: Files of the run directory logged as W&B artifacts: (glob, artifact type).
ARTIFACT_FILES = (("calibration.npz", "reliability"), ("predictions_*", "predictions"))


def wandb_credentials_present() -> bool:
    """Whether W&B could authenticate without asking: ``WANDB_API_KEY`` or a netrc entry."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    path = os.environ.get("NETRC", str(Path.home() / ".netrc"))
    try:
        return netrc.netrc(path).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


class Tracker:
    """The loggers of one run.

    Args:
        logger_cfg: the ``logger`` config node (``{name: settings}``; several names at once).
        run_dir: the run directory; loggers write inside it.
    """

    def __init__(self, logger_cfg: DictConfig | None, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self.lightning_cfgs = {}
        self.wandb_cfg: dict[str, Any] | None = None
        for name, node in (logger_cfg or {}).items():
            if node is None:
                continue
            if name == "wandb":
                self.wandb_cfg = OmegaConf.to_container(node, resolve=True)
            else:
                self.lightning_cfgs[name] = node
        self.wandb_run = None
        if self.wandb_cfg is not None:
            self.check_wandb()

    def check_wandb(self) -> None:
        """Refuse a bad mode and an online run without credentials, before any training."""
        mode = self.wandb_cfg.get("mode")
        if mode not in WANDB_MODES:
            raise ConfigError(f"logger.wandb.mode must be one of {', '.join(WANDB_MODES)}, got {mode!r}.")
        if mode == "online" and not wandb_credentials_present():
            raise ConfigError(
                "logger.wandb.mode=online needs W&B credentials, but neither WANDB_API_KEY nor a netrc "
                "entry for api.wandb.ai is set; run `wandb login`, export WANDB_API_KEY, or use "
                "logger.wandb.mode=offline."
            )
        if mode == "online":
            from compbench.hub import host_reachable

            url = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")
            if not host_reachable(url):
                raise ConfigError(
                    f"logger.wandb.mode=online but {urlparse(url).hostname} is unreachable from this machine; "
                    "use logger.wandb.mode=offline and upload later with `wandb sync`."
                )

    def start(self, resolved_cfg: dict[str, Any], row: dict[str, Any], group: str) -> None:
        """Open the W&B run (if configured) with the resolved config, group, job type and tags."""
        if self.wandb_cfg is None:
            return
        import wandb

        settings = self.wandb_cfg
        tags = [f"model:{row['model']}", f"task:{row['task']}", *(settings.get("tags") or [])]
        if row.get("lang"):
            tags.append(f"lang:{row['lang']}")
        self.wandb_run = wandb.init(
            project=settings.get("project") or "compbench",
            entity=settings.get("entity"),
            mode=settings["mode"],  # wins over an inherited WANDB_MODE; the environment is left alone
            dir=str(self.run_dir),
            name=row["run_id"],
            group=settings.get("group") or group or None,
            job_type=row["method"],
            tags=tags,
            config=resolved_cfg,
            reinit="create_new",  # a sweep runs several compbench runs in one process
            settings=wandb.Settings(silent=True, console="off", init_timeout=90),
        )
        log.info("W&B run %s (%s) in %s", self.wandb_run.id, settings["mode"], self.wandb_run.dir)

    def phase_loggers(self, phase: str) -> list:
        """Lightning loggers for one training phase: CSV/TensorBoard per phase, W&B prefixed."""
        loggers = [instantiate(node, save_dir=str(self.run_dir), name=phase) for node in self.lightning_cfgs.values()]
        if self.wandb_run is not None:
            from lightning.pytorch.loggers import WandbLogger

            loggers.append(WandbLogger(experiment=self.wandb_run, prefix=phase))
        return loggers

    def finish(self, row: dict[str, Any]) -> None:
        """Write the final row as the W&B summary, log the artifacts and close the run."""
        if self.wandb_run is None:
            return
        import wandb

        run, self.wandb_run = self.wandb_run, None
        try:
            run.summary.update(row)
            for pattern, kind in ARTIFACT_FILES:
                files = sorted(self.run_dir.glob(pattern))
                if not files:
                    continue
                artifact = wandb.Artifact(f"{kind}-{row['run_id']}", type=kind)
                for path in files:
                    artifact.add_file(str(path))
                run.log_artifact(artifact)
        finally:
            run.finish(exit_code=0 if row.get("status") == "ok" else 1)
