"""Command-line checks made before Hydra composes the config: one sentence per mistake.

Hydra reports a misspelled group option as "Could not find 'method/prunning'" followed by a
40-line search path, and a misspelled key with the advice to "append" it with ``+`` — which
would silently add a setting nobody reads. ``check_command_line`` parses the same overrides
with Hydra's own parser, composes them with Hydra's own ``compose`` (so what passes here
composes identically in the app), and turns each failure into one sentence with the nearest
valid name ("did you mean prune_magnitude?"). It runs in well under a second and changes
nothing: a command it accepts is handed to Hydra untouched.
"""

from __future__ import annotations

import difflib
import itertools
import os
import re
from pathlib import Path
from typing import Any

from compbench.errors import first_line, first_line_or_type

#: Command-line options after which we step aside and let Hydra answer (help, config dumps, ...).
_HYDRA_OPTIONS_WE_PASS = ("-m", "--multirun")
#: Most group-choice combinations of a sweep composed here (each costs ~20 ms).
MAX_COMBINATIONS = 32


def nearest(word: str, options: list[str], cutoff: float = 0.4) -> str | None:
    """The option closest to ``word`` by difflib's similarity ratio, or None if none is close."""
    matches = difflib.get_close_matches(word, options, n=1, cutoff=cutoff)
    return matches[0] if matches else None


def group_options(conf_dir: Path, group: str) -> list[str]:
    """Config names available in ``conf/<group>/``."""
    return sorted(p.stem for p in (Path(conf_dir) / group).glob("*.yaml"))


def config_groups(conf_dir: Path) -> list[str]:
    """Top-level config groups of ``conf/`` (Hydra's own ``hydra/...`` groups excluded)."""
    return sorted(p.name for p in Path(conf_dir).iterdir() if p.is_dir() and p.name != "hydra")


def _choices(override: Any) -> list[Any]:
    """Every value an override names: each element of a sweep or a list, else the value."""
    if override.is_sweep_override():
        return list(override.sweep_string_iterator())
    value = override.value()
    return list(value) if isinstance(value, list) else [value]


def _bad_group_choice(override: Any, conf_dir: Path) -> str | None:
    group = override.key_or_group
    options = group_options(conf_dir, group)
    for choice in _choices(override):
        if choice is None or str(choice) == "null" or str(choice) in options:
            continue
        guess = nearest(str(choice), options)
        hint = f"did you mean {guess}? " if guess else "the "
        return f"{group}={choice} names no config in conf/{group}/; {hint}options are {', '.join(options)}."
    return None


def _leaf_paths(node: Any, prefix: str = "") -> list[str]:
    from omegaconf import DictConfig

    paths = []
    if isinstance(node, DictConfig):
        for key in node.keys():
            path = f"{prefix}{key}"
            paths.append(path)
            try:
                child = node._get_node(key)
            except Exception:  # noqa: BLE001 - a broken interpolation: keep the key, skip its children
                continue
            paths += _leaf_paths(child, path + ".")
    return paths


def _unknown_key_sentence(key: str, value: str, compose_without, context: str = "") -> str:
    """Sentence for an override of a key the config does not have, naming the nearest key."""
    try:
        cfg = compose_without()
    except Exception:  # noqa: BLE001 - the rest of the command is broken too; name the key anyway
        cfg = None
    known = [p for p in _leaf_paths(cfg) if not p.startswith("hydra") and not p.rpartition(".")[2].startswith("_")] \
        if cfg is not None else []
    parent, _, leaf = key.rpartition(".")
    siblings = [p for p in known if p.rpartition(".")[0] == parent]
    by_leaf = {s.rpartition(".")[2]: s for s in siblings}
    leaf_guess = nearest(leaf, list(by_leaf), cutoff=0.6)
    guess = by_leaf[leaf_guess] if leaf_guess else nearest(key, known, cutoff=0.8)
    if guess:
        return f"{key} is not a compbench setting{context}; did you mean {guess}={value}?"
    where = f" ({parent or 'the top level'} has: {', '.join(s.rpartition('.')[2] for s in siblings)})" if siblings else ""
    return (f"{key} is not a compbench setting{context}{where}; check its spelling, or write +{key}={value} "
            "if you mean to add a new key.")


def check_command_line(argv: list[str], conf_dir: Path, config_name: str = "config") -> str | None:
    """One sentence describing the first mistake in ``argv``, or None when Hydra may proceed.

    Checks, in order: each override parses; each group choice (``method=...``, also every
    element of a sweep) names a file in ``conf/<group>/``; the overrides compose (every key
    exists; for a sweep, every combination of group choices is composed); no mandatory value
    (``???``) is left unset; every interpolation resolves.
    """
    if any(a.startswith("-") and a not in _HYDRA_OPTIONS_WE_PASS for a in argv):
        return None  # --help, --cfg job, --config-dir ...: Hydra's own business
    overrides = [a for a in argv if a not in _HYDRA_OPTIONS_WE_PASS]
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    parsed = []
    for text in overrides:
        try:
            parsed.append(parser.parse_override(text))
        except Exception as exc:  # noqa: BLE001 - Hydra's parse errors have several types
            return (f"cannot read the override {text!r} ({first_line_or_type(exc).rstrip('.')}); write key=value, "
                    "and quote a value holding commas, brackets or spaces.")

    groups = set(config_groups(conf_dir))
    group_overrides = [o for o in parsed if o.key_or_group in groups and not o.is_delete()]
    for override in group_overrides:
        message = _bad_group_choice(override, conf_dir)
        if message:
            return message

    # Compose each combination of group choices; other sweeps are represented by their first value.
    def single(o, value=None) -> str:
        if value is None and not o.is_sweep_override():
            return o.input_line
        value = value if value is not None else _choices(o)[0]
        prefix = o.input_line[: len(o.input_line) - len(o.input_line.lstrip("+~"))]
        return f"{prefix}{o.get_key_element()}={value}"

    swept = [o for o in group_overrides if o.is_sweep_override()]
    combos = list(itertools.islice(itertools.product(*(_choices(o) for o in swept)), MAX_COMBINATIONS))
    for combo in combos or [()]:
        chosen = dict(zip(map(id, swept), combo))
        args = [single(o, chosen.get(id(o))) for o in parsed]
        context = " with " + " ".join(f"{o.key_or_group}={v}" for o, v in zip(swept, combo)) if combo else ""
        message = _compose_check(conf_dir, config_name, args, context)
        if message:
            return message
    return None


def _compose_check(conf_dir: Path, config_name: str, args: list[str], context: str = "") -> str | None:
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(Path(conf_dir).resolve()), version_base="1.3"):
        try:
            cfg = compose(config_name, overrides=args)
        except Exception as exc:  # noqa: BLE001 - Hydra wraps every composition error differently
            text = str(exc)
            match = re.search(r"Could not override '([^']+)'", text)
            cause = str(exc.__cause__ or "")
            if match and ("not in struct" in cause or "not in struct" in text):
                key = match.group(1)
                bad = next(a for a in args if a.lstrip("+~").split("=", 1)[0] == key)
                value = bad.split("=", 1)[1] if "=" in bad else ""
                return _unknown_key_sentence(key, value, lambda: compose(config_name, [a for a in args if a != bad]),
                                             context)
            first = first_line(text) or type(exc).__name__
            detail = first_line(cause)
            return f"the command line does not compose: {first.rstrip('.')}{f' ({detail})' if detail else ''}."
        missing = sorted(m for m in OmegaConf.missing_keys(cfg) if not m.startswith("hydra"))
        if missing:
            key = missing[0]
            return f"{key} has no value (it is ??? in its config file); set it on the command line, e.g. {key}=<value>."
        try:
            OmegaConf.to_container(cfg, resolve=True)
        except Exception as exc:  # noqa: BLE001 - interpolation and resolver errors
            first = first_line_or_type(exc)
            key = getattr(exc, "full_key", None)
            where = f" in {key}" if key else ""
            return f"cannot resolve the config{where}: {first.rstrip('.')}; fix the ${{...}} reference or set the value directly."
        output_dir = cfg.get("paths", {}).get("output_dir")
        if output_dir:  # Hydra writes its job folder there first, with a traceback when it cannot
            try:
                Path(output_dir).mkdir(parents=True, exist_ok=True)
                probe = Path(output_dir) / f".compbench-write-test-{os.getpid()}"
                probe.touch()
                probe.unlink()
            except OSError as exc:
                return (f"cannot write to paths.output_dir={output_dir} ({exc.strerror}); "
                        "set paths.output_dir to a writable folder.")
    return None
