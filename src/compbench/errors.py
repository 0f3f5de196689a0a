"""Errors that compbench reports to the user as one clear sentence."""

from __future__ import annotations

import os


class ConfigError(ValueError):
    """Bad input: what is wrong and how to fix it, raised before any expensive work."""


class TrainingDiverged(RuntimeError):
    """The training loss or gradients became NaN/Inf; the run stops instead of wasting steps."""


class Preempted(RuntimeError):
    """The run received SIGTERM (SLURM pre-emption): it checkpointed and stopped; re-run to resume."""


class DiskFull(RuntimeError):
    """The disk filled up while writing a run's output (after the work, not bad input): free space, re-run."""


#: Exceptions whose message is written for the user: printed without the exception's type.
USER_ERRORS = (ConfigError, TrainingDiverged, Preempted, DiskFull)


def show_traceback() -> bool:
    """Whether failures print their Python traceback: ``COMPBENCH_DEBUG=1`` or ``HYDRA_FULL_ERROR=1``.

    Either way the traceback of a failed run is kept in its run directory (``traceback.txt``).
    """
    return os.environ.get("COMPBENCH_DEBUG") == "1" or os.environ.get("HYDRA_FULL_ERROR") == "1"


def first_line(exc: BaseException | str) -> str:
    """The first non-empty line of an exception's message (or of a text), stripped; "" if none."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return lines[0] if lines else ""


def first_line_or_type(exc: BaseException) -> str:
    """:func:`first_line`, or the exception type's name when the message is empty."""
    return first_line(exc) or type(exc).__name__


def user_sentence(exc: BaseException) -> str:
    """The one line a user reads about ``exc``: our own sentences as written, else ``Type: message``."""
    text = first_line(exc)
    if isinstance(exc, USER_ERRORS) and text:
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
