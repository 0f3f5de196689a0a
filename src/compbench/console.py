"""What a run prints: compbench's own messages on the console, everything else in ``run.log``.

Third-party libraries talk a lot on import and while training (torchao's optional-kernel loads,
torch's deprecation notes, Lightning's tips, transformers' progress bars, absl's tokenizer
notes). By default (``verbose=false``) the console shows compbench's INFO messages and other
libraries' errors only; every record still reaches the run's ``run.log`` (the file handler sees
them all), and Python warnings go there too instead of to the terminal. ``verbose=true`` shows
everything as the libraries print it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from typing import Iterator

#: Loggers whose INFO messages are compbench's own (the console shows them in quiet mode).
OWN_LOGGERS = ("compbench", "__main__")


class QuietConsoleFilter(logging.Filter):
    """Let compbench's INFO+ records through (its DEBUG details go to run.log only), and other
    libraries' ERROR+ records only."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.split(".")[0] in OWN_LOGGERS:
            return record.levelno >= logging.INFO
        return record.levelno >= logging.ERROR


class ConsoleFormatter(logging.Formatter):
    """``message`` for INFO, ``WARNING: message`` above; the file log keeps timestamps and names."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()  # no traceback: it is in run.log and traceback.txt
        if record.levelno >= logging.WARNING:
            return f"{record.levelname}: {message}"
        return message


def _console_handlers() -> list[logging.Handler]:
    return [
        h for h in logging.getLogger().handlers
        if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
    ]


def setup_console(verbose: bool = False) -> None:
    """Make the console quiet (``verbose=False``) or leave every library's output as it is.

    Idempotent: a multirun calls it once per job.
    """
    if verbose:
        return
    # Import the chattiest libraries now, so that handlers they attach at import are found below.
    import lightning.pytorch  # noqa: F401
    import torch  # noqa: F401

    logging.captureWarnings(True)  # warnings -> the 'py.warnings' logger -> run.log, not the terminal
    for handler in _console_handlers():
        if not any(isinstance(f, QuietConsoleFilter) for f in handler.filters):
            handler.addFilter(QuietConsoleFilter())
        handler.setFormatter(ConsoleFormatter())
    # Libraries that print through handlers of their own (torch's 'W1129 ...' lines, Lightning's
    # 'INFO: GPU available'): send their records up to the root handlers instead, which filter
    # the console and keep everything in run.log.
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if not isinstance(logger, logging.Logger) or name.split(".")[0] in OWN_LOGGERS:
            continue
        for handler in list(logger.handlers):
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
                logger.removeHandler(handler)
        logger.propagate = True
    logging.getLogger("compbench").setLevel(logging.DEBUG)  # details (per-perturbation scores) to run.log
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.disable_default_handler()
    hf_logging.enable_propagation()
    with contextlib.suppress(ImportError):
        import datasets

        datasets.disable_progress_bars()
    with contextlib.suppress(ImportError):
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()


@contextlib.contextmanager
def native_stderr_to_log(logger: logging.Logger) -> Iterator[None]:
    """Capture what C/C++ code writes to file descriptor 2 (e.g. Kineto's ``USDT: profiler_start``
    lines) inside the block and log it at DEBUG, so it lands in run.log, not on the terminal."""
    try:
        saved = os.dup(2)
    except OSError:  # no fd 2 (embedded interpreters): nothing to capture
        yield
        return
    with tempfile.TemporaryFile(mode="w+b") as capture:
        sys.stderr.flush()
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text = capture.read().decode("utf-8", "replace").strip()
            if text:
                logger.debug("native stderr: %s", text)
