"""The `versatune` command line: `versatune demo|detect|detect-plot [--flags]`."""

from __future__ import annotations

import sys

from transformers import HfArgumentParser

from .demo import DemoArguments, run_demo
from .detect import DetectArguments, DetectPlotArguments, run_detect, run_detect_plot

COMMANDS = {
    "demo": (DemoArguments, run_demo),
    "detect": (DetectArguments, run_detect),
    "detect-plot": (DetectPlotArguments, run_detect_plot),
}
USAGE = "usage: versatune {demo,detect,detect-plot} [--flags]   (versatune <command> --help lists the flags)"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        print(USAGE, file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    arguments_class, run = COMMANDS[argv[0]]
    parser = HfArgumentParser(arguments_class, prog=f"versatune {argv[0]}")
    (arguments,) = parser.parse_args_into_dataclasses(argv[1:])
    run(arguments)
    return 0
