"""Shared by the benchmark scripts: a results table goes to stdout and, when asked, to its results file."""

from __future__ import annotations

import os
import platform
import time
from types import ModuleType


def publish(lines: list[str], output: str | None) -> None:
    """Print the report made of `lines` and write it to `output` (a Markdown file) when given."""
    report = "\n".join(lines) + "\n"
    print(report)
    if output:
        with open(output, "w", encoding="utf-8") as handle:
            handle.write(report)


def versions_and_time(started: float, *modules: ModuleType) -> str:
    """`Versions: Python …, <module> <version>, …. Took N s on C CPU cores.` for a report's last line."""
    names = ", ".join(f"{module.__name__} {module.__version__}" for module in modules)
    return (
        f"Versions: Python {platform.python_version()}, {names}. "
        f"Took {time.time() - started:.0f} s on {os.cpu_count()} CPU cores."
    )
