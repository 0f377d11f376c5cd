"""Where VersaTune's log messages go: they follow transformers' verbosity and print with their level.

transformers keeps its loggers under a `transformers` logger whose level is what
`transformers.logging.set_verbosity_*()` and `TrainingArguments.log_level` set, and which does not propagate to the
root logger. A package logger outside that tree (as TRL's and this package's were) stays at Python's default WARNING
level whatever the user chose, so its INFO messages never show, and its warnings reach the console through Python's
last-resort handler as bare lines. Here the `versatune_hf` logger takes its level from the `transformers` logger and
prints through its own stderr handler as `[VersaTune WARNING] ...`; like transformers', it does not propagate to the
root logger (replace `logging.getLogger("versatune_hf").handlers` to send its records elsewhere).
"""

from __future__ import annotations

import functools
import logging
import sys

PACKAGE_LOGGER = "versatune_hf"
FORMAT = "[VersaTune %(levelname)s] %(message)s"


def get_logger(name: str) -> logging.Logger:
    """The logger of module `name` (a `versatune_hf.*` name), with the package logger set up on first use."""
    _set_up_package_logger()
    return logging.getLogger(name)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is when a record comes (notebooks and test runners replace it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        """`StreamHandler.__init__` sets a stream; this handler always looks `sys.stderr` up instead."""


@functools.cache
def _set_up_package_logger() -> None:
    """Once per process (a handler the user replaced is not added back)."""
    from transformers.utils import logging as transformers_logging

    package = logging.getLogger(PACKAGE_LOGGER)
    package.parent = transformers_logging.get_logger("transformers")  # its level is transformers' verbosity
    package.propagate = False
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter(FORMAT))
    package.addHandler(handler)
