"""``compbench-pretrain``: only the pretraining stage of a model config with a ``pretrain:`` block.

    compbench-pretrain model=small_encoder_hau                      # masked LM on mono/hau.txt
    compbench-pretrain model=small_gpt2_wikitext2                   # causal LM on WikiText-2
    compbench-pretrain model=small_encoder_hau model.pretrain.corpus=../shared/data/mono/yor.txt model.pretrain.lang=yor

Prints the cached checkpoint folder, which ``compbench model=hub model.name_or_path=<folder>``
fine-tunes; ``compbench model=small_encoder_hau ...`` does both in one run (pretraining only when
the cache lacks it). Same config tree as ``compbench`` (``conf/``).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig

log = logging.getLogger("compbench")
_exit_code = 0


def app(cfg: DictConfig) -> None:
    """Hydra task function: pretrain (or find in the cache) the model's checkpoint."""
    from compbench.configs import build_dataclass
    from compbench.console import setup_console
    from compbench.errors import ConfigError, first_line
    from compbench.records.run_record import new_run_id
    from compbench.training.pretrain import PretrainSpec, objective_of, pretrained_checkpoint

    global _exit_code
    setup_console(verbose=bool(cfg.get("verbose", False)))  # quiet by default, as compbench is
    try:
        if cfg.get("threads"):
            torch.set_num_threads(int(cfg.threads))
        spec = build_dataclass(cfg.model, "model")
        if spec.pretrain is None:
            raise ConfigError(f"model '{spec.name}' has no pretrain: block; pick a model config with one "
                              "(e.g. model=small_encoder_hau) or add model.pretrain.corpus=<text file>.")
        family = spec.resolve_family()
        objective_of(family)
        pretrain = build_dataclass({"_target_": f"{PretrainSpec.__module__}.PretrainSpec", **spec.pretrain},
                                   "model.pretrain")
        path, key, row = pretrained_checkpoint(spec.name, family, dict(spec.tiny or {}), pretrain, cfg, new_run_id())
    except Exception as exc:  # noqa: BLE001 - one sentence, exit code 1
        print(f"compbench-pretrain: {type(exc).__name__}: {first_line(exc)}",
              file=sys.stderr, flush=True)
        _exit_code = 1
        return
    if row is None:
        print(f"pretrained model (key {key}) reused from cache: {path}")
    else:
        print(f"pretrained {row['method']} for {row['duration_s']:.0f} s: held-out loss {row['quality.nll']:.4f} "
              f"(ppl {row['quality.ppl']:.2f}); row {row['run_id']} stored in {cfg.paths.db}")
        print(f"checkpoint: {path}")
    print(f"fine-tune it: compbench model=hub model.name_or_path={Path(path).resolve()} model.name={spec.name} ...")


def main() -> None:
    """Console-script entry point; the config tree is looked up here, not at import."""
    from compbench.configs import conf_dir
    from compbench.errors import ConfigError

    try:
        conf = conf_dir()
    except ConfigError as exc:
        sys.exit(f"compbench-pretrain: {exc}")
    hydra.main(version_base="1.3", config_path=str(conf), config_name="config")(app)()
    sys.exit(_exit_code)


if __name__ == "__main__":
    main()
