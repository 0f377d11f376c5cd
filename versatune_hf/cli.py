"""The `versatune` command line: `versatune demo|detect|detect-plot [--flags]`.

A subcommand's module (and with it torch and transformers) is imported only when that subcommand runs, so
`versatune --help` answers at once.
"""

from __future__ import annotations

import importlib
import sys
from typing import NamedTuple


class Command(NamedTuple):
    module: str
    arguments: str
    run: str
    summary: str


COMMANDS = {
    "demo": Command(
        "versatune_hf.demo.runner",
        "DemoArguments",
        "run_demo",
        "fine-tune a tiny model on the bundled six-domain corpus with one or more strategies, and plot the mixture",
    ),
    "detect": Command(
        "versatune_hf.detection.detect",
        "DetectArguments",
        "run_detect",
        "Phase 1: sample a base model unconditionally, label the texts by domain, write the starting shares",
    ),
    "detect-plot": Command(
        "versatune_hf.detection.detect",
        "DetectPlotArguments",
        "run_detect_plot",
        "stacked share bars of several detect.json results",
    ),
}


def usage() -> str:
    lines = ["usage: versatune <command> [--flags]   (versatune <command> --help lists the flags)", "", "commands:"]
    lines += [f"  {name:<12} {command.summary}" for name, command in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        asked_for_help = bool(argv) and argv[0] in ("-h", "--help")
        print(usage(), file=sys.stdout if asked_for_help else sys.stderr)
        if argv and not asked_for_help:
            print(f"\nversatune: unknown command {argv[0]!r}", file=sys.stderr)
        return 0 if asked_for_help else 2
    from transformers import HfArgumentParser

    command = COMMANDS[argv[0]]
    module = importlib.import_module(command.module)
    parser = HfArgumentParser(getattr(module, command.arguments), prog=f"versatune {argv[0]}")
    try:
        (arguments,) = parser.parse_args_into_dataclasses(argv[1:])
    except ValueError as error:  # a value the options' own checks refuse: an argparse error, before any work
        parser.error(str(error))
    getattr(module, command.run)(arguments)
    return 0
