"""The pretrained-base regime end to end: the base and Phase 1, mixture quality, domain expansion, and (full run
only) the search for a rule that beats uniform and the reference losses estimated without a reference model.

    python benchmarks/pretrained_regime.py --sources-root sources            # full, into benchmarks/results/
    python benchmarks/pretrained_regime.py --sources-root sources --quick    # fewer seeds, steps and strategies

`--sources-root` is where the Debian packages of the pretraining text are unpacked (see
`versatune_hf/data/base/SOURCES.md`); without it the first step (rebuilding the bases and checking Phase 1) is skipped
and the bundled base is used as it is. Each step writes its own results file with its command, versions and time;
the quick run writes under `benchmarks/results/quick/` so that it never overwrites the committed tables.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
STEPS = {
    "full": {
        "pretrained_base": [],
        "mixture_quality": ["--base", "bundled", "--seeds", "0,1,2"],
        "domain_expansion": ["--base", "bundled", "--seeds", "0,1,2"],
        "rule_search": [],
        "reference_estimates": ["--base", "bundled", "--seeds", "0,1,2"],
    },
    "quick": {
        "pretrained_base": ["--num-samples", "200"],
        "mixture_quality": [
            "--base",
            "bundled",
            "--seeds",
            "0,1",
            "--steps",
            "150",
            "--eval-steps",
            "25",
            "--questions-per-domain",
            "10",
            "--strategies",
            "uniform,versatune-constant,versatune,odm,progress",
        ],
        "domain_expansion": [
            "--base",
            "bundled",
            "--seeds",
            "0",
            "--base-steps",
            "100",
            "--expansion-steps",
            "100",
            "--eval-steps",
            "50",
        ],
    },
}
OUTPUT_DIRS = {
    "pretrained_base": "pretrained_base",
    "mixture_quality": "mixture_quality_pretrained",
    "domain_expansion": "domain_expansion_pretrained",
    "rule_search": "rule_search",
    "reference_estimates": "reference_estimates_pretrained",
}
OUTPUT_FILES = {"reference_estimates"}
"""Steps that write one Markdown file (`--output <dir>.md`) rather than a folder (`--output-dir <dir>`)."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sources-root", default=None, help="Where wordnet-base and gnucash-docs are unpacked.")
    parser.add_argument("--quick", action="store_true", help="Fewer seeds, steps and strategies (minutes, not hours).")
    args = parser.parse_args()
    mode = "quick" if args.quick else "full"
    results = os.path.join(HERE, "results", "quick") if args.quick else os.path.join(HERE, "results")
    started = time.time()
    for script, options in STEPS[mode].items():
        if script == "pretrained_base":
            if args.sources_root is None:
                print("No --sources-root: skipping the base rebuild and Phase 1 check; the bundled base is used.")
                continue
            options = [*options, "--sources-root", args.sources_root]
        command = [sys.executable, os.path.join(HERE, f"{script}.py"), *options]
        output = os.path.join(results, OUTPUT_DIRS[script])
        command += ["--output", f"{output}.md"] if script in OUTPUT_FILES else ["--output-dir", output]
        print(f"[{time.time() - started:6.0f} s] {' '.join(command)}", flush=True)
        subprocess.run(command, check=True)
    print(f"The {mode} pretrained-base regime took {(time.time() - started) / 60:.1f} min; results under {results}.")


if __name__ == "__main__":
    main()
