"""Shared by the benchmark scripts: a results table goes to stdout and, when asked, to its results file."""

from __future__ import annotations


def publish(lines: list[str], output: str | None) -> None:
    """Print the report made of `lines` and write it to `output` (a Markdown file) when given."""
    report = "\n".join(lines) + "\n"
    print(report)
    if output:
        with open(output, "w", encoding="utf-8") as handle:
            handle.write(report)
