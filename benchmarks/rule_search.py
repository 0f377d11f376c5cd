"""Looking for a mixture rule that beats uniform from the pretrained base (issue 14, item 5), on tuning seeds only.

    python benchmarks/rule_search.py --output-dir benchmarks/results/rule_search

Options are chosen on seeds 100 and 101 only; reported seeds are used once each (0, 1, 2 and later 3, 4, 5). Every
step is one `mixture_quality.py` run from the bundled base (300 steps, batch 8, an evaluation every 50 steps, 300
train rows per domain), written to its own folder and skipped when its `results.json` exists, so an interrupted
search resumes where it stopped (delete a folder to run its step again). No rule here reads ℓ_ref, so the steps
measure none (`--no-reference-losses`); the committed folders were written before that option existed and each
measured one, which took about 4 of the minutes of each lr 2e-4 step:

* `probe_lr2e-3`, `probe_lr2e-4`: uniform and six fixed mixtures around it (one domain at 0.25, the other five at
  0.15), seed 100, at the benchmark's learning rate and at a 10x gentler one. What a rule could gain at best by moving
  share toward one domain: the change of the mean, of the worst domain and of forgetting, and the domain's own gain.
* `progress_lr2e-3`, `progress_lr2e-4`: the `progress` rule below, η = 0.5, from uniform; at the gentler learning
  rate also with a floor of 0.1 on every weight (`min_weight`), so that no domain is starved.
* `protected_lr2e-3`, `protected_lr2e-4`: `progress-protect-worst`, the same rule except that the domain with the
  highest eval loss never loses share.
* `reported_seeds_lr2e-4`: the candidate that came closest to the bar on the tuning seeds, unchanged, on the reported
  seeds 0, 1 and 2 (the only step that uses them). It tied uniform on the worst domain, so the search went on:
* `lifted_lr2e-4`: `progress-lift-worst-<lift>`, `progress-protect-worst` whose worst domain also gains a factor
  (1 + lift) of share at every update, for lift 0.02 and 0.05, on the tuning seeds.
* `fresh_seeds_lr2e-4`: the lift that met the bar on the tuning seeds (`CHOSEN_LIFT`), unchanged, on seeds 3, 4 and
  5, which no earlier step or benchmark used: the reported seeds 0, 1 and 2 had already been seen once.
* `chosen_at_lr2e-3`: the same rule, unchanged, at the benchmark's own learning rate on its seeds 0, 1, 2 (the
  footnoted `progress` row of the README's table of `benchmarks/results/mixture_quality_pretrained`).

The rules are the library's `progress` strategy (`versatune_hf.mixing.strategies.progress_update`): a domain drew a
share w_d of the samples since the last evaluation and its eval loss fell by π_d = max((ℓ_prev − ℓ) / ℓ_prev, 0), so
π_d / w_d is what a unit of share bought; the score compares it with the mixture's average,
s_d = π_d / (w_d · Σ_j π_j), and w ← w · exp(η · s), η = 0.5. `progress_worst_lift` None is the plain rule, 0 is
`progress-protect-worst`, 0.02 and 0.05 the lifted ones. The search first defined these rules in this script as
strategies of their own, and the commands in the committed step folders still name them so (`"strategy":
"progress-protect-worst"`, ...); the library's strategy gives the same weights to 2e-16 (checked on 3000 random
updates through `compute_update` when it moved into the library). The library then stopped the lift at 2 / N, which
no run here reached: `fresh_seeds_lr2e-4` rerun with it gives the committed results to the bit.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import time

import mixture_quality
import torch
import transformers
import trl
from report import publish, versions_and_time

from versatune_hf.demo.corpus import DEMO_DOMAINS

PROBE_SHARE, OTHERS_SHARE = 0.25, 0.15
PROGRESS = {"strategy": "progress", "eta": 0.5, "progress_worst_lift": None}
PROTECTED = {**PROGRESS, "progress_worst_lift": 0.0}
LIFTS = (0.02, 0.05)
CHOSEN_LIFT = 0.05  # the only lift that met all three parts of the bar on the tuning seeds (step lifted_lr2e-4)
LIFTED = {lift: {**PROGRESS, "progress_worst_lift": lift} for lift in LIFTS}


def probes() -> dict[str, dict]:
    """One fixed mixture per domain: that domain at `PROBE_SHARE`, the others at `OTHERS_SHARE`."""
    return {
        f"more-{domain}": {
            "strategy": "static",
            "initial_weights": {name: PROBE_SHARE if name == domain else OTHERS_SHARE for name in DEMO_DOMAINS},
        }
        for domain in DEMO_DOMAINS
    }


STEPS = {
    "probe_lr2e-3": (["--seeds", "100", "--learning-rate", "2e-3"], probes()),
    "probe_lr2e-4": (["--seeds", "100", "--learning-rate", "2e-4"], probes()),
    "progress_lr2e-3": (["--seeds", "100,101", "--learning-rate", "2e-3"], {"progress": PROGRESS}),
    "progress_lr2e-4": (
        ["--seeds", "100,101", "--learning-rate", "2e-4"],
        {"progress": PROGRESS, "progress-floor0.1": {**PROGRESS, "min_weight": 0.1}},
    ),
    "protected_lr2e-3": (["--seeds", "100,101", "--learning-rate", "2e-3"], {"progress-protect-worst": PROTECTED}),
    "protected_lr2e-4": (["--seeds", "100,101", "--learning-rate", "2e-4"], {"progress-protect-worst": PROTECTED}),
    "reported_seeds_lr2e-4": (["--seeds", "0,1,2", "--learning-rate", "2e-4"], {"progress-protect-worst": PROTECTED}),
    "lifted_lr2e-4": (
        ["--seeds", "100,101", "--learning-rate", "2e-4"],
        {f"progress-lift-worst-{lift}": LIFTED[lift] for lift in LIFTS},
    ),
    "fresh_seeds_lr2e-4": (
        ["--seeds", "3,4,5", "--learning-rate", "2e-4"],
        {f"progress-lift-worst-{CHOSEN_LIFT}": LIFTED[CHOSEN_LIFT]},
    ),
    "chosen_at_lr2e-3": (
        ["--seeds", "0,1,2", "--learning-rate", "2e-3"],
        {f"progress-lift-worst-{CHOSEN_LIFT}": LIFTED[CHOSEN_LIFT]},
    ),
}


def run_step(folder: str, options: list[str], variants: dict[str, dict]) -> None:
    """One `mixture_quality.py` run, in this process."""
    sys.argv = [
        "mixture_quality.py",
        "--base",
        "bundled",
        "--strategies",
        "uniform",
        "--variants",
        json.dumps(variants),
        "--output-dir",
        folder,
        "--no-reference-losses",
        *options,
    ]
    mixture_quality.main()


def relative_change(after: float, before: float) -> float:
    return 100 * (after - before) / before


def mean_and_spread(values: list[float]) -> str:
    """`+m` for one seed, `+m ± s` (standard deviation) for several."""
    spread = f" ± {statistics.stdev(values):.2f}" if len(values) > 1 else ""
    return f"{statistics.mean(values):+.2f}{spread}"


def summary_rows(results: dict[str, list[dict]]) -> list[str]:
    """Per variant: the change of the mean loss, of the worst domain, of mean forgetting and the own domain's loss,
    each against uniform of the same seed (mean over seeds; negative loss change = better)."""
    uniform = {run["seed"]: run for run in results["uniform"]}
    rows = []
    for name, runs in results.items():
        if name == "uniform":
            continue
        mean_change, worst_change, forgetting_change, own_change = [], [], [], []
        for run in runs:
            base = uniform[run["seed"]]
            mean_change.append(
                relative_change(statistics.mean(run["losses"].values()), statistics.mean(base["losses"].values()))
            )
            worst_change.append(relative_change(max(run["losses"].values()), max(base["losses"].values())))
            forgetting_change.append(
                statistics.mean(run["forgetting"].values()) - statistics.mean(base["forgetting"].values())
            )
            domain = name.removeprefix("more-")
            if domain in run["losses"]:
                own_change.append(run["losses"][domain] - base["losses"][domain])
        own = f"{statistics.mean(own_change):+.3f}" if own_change else "n/a"
        seeds = ",".join(str(run["seed"]) for run in runs)
        rows.append(
            f"| {name} | {seeds} | {mean_and_spread(mean_change)} | {mean_and_spread(worst_change)} | "
            f"{mean_and_spread(forgetting_change)} | {own} |"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output-dir", default="benchmarks/results/rule_search")
    args = parser.parse_args()
    started = time.time()
    lines = [
        "# Looking for a mixture rule that beats uniform (options chosen on seeds 100 and 101)",
        "",
        f"Command: `python benchmarks/rule_search.py --output-dir {args.output_dir}`. Each step is a "
        "`mixture_quality.py --base bundled` run (its own results.md in the step's folder has the exact command and "
        "the per-domain table). Changes are against uniform on the same seed: mean and worst-domain eval loss in % "
        "(negative = better), mean forgetting of the pretraining text in points (negative = forgets less), and the "
        "probed domain's own eval loss. For scale: over the reported seeds 0, 1, 2 uniform's mean loss has a "
        "standard deviation of 0.11 % at lr 2e-3, and at lr 2e-4 0.01 % over seeds 0, 1, 2 and 0.08 % over seeds "
        "3, 4, 5; a ± after a change is its standard deviation over the step's seeds. A step's command reads "
        "`python mixture_quality.py ...` when this script ran it (in its own process); the two probe steps were "
        "first run directly as "
        "`python benchmarks/mixture_quality.py` with the same options and copied here.",
    ]
    minutes = 0.0
    for step, (options, variants) in STEPS.items():
        folder = os.path.join(args.output_dir, step)
        if not os.path.exists(os.path.join(folder, "results.json")):
            run_step(folder, options, variants)
        with open(os.path.join(folder, "results.json"), encoding="utf-8") as handle:
            results = json.load(handle)
        with open(os.path.join(folder, "results.md"), encoding="utf-8") as handle:
            minutes += float(re.search(r"; ([0-9.]+) min on", handle.read()).group(1))
        lines += [
            "",
            f"## {step} (`{' '.join(options)}`)",
            "",
            "| variant | seeds | mean loss % | worst domain % | mean forgetting (points) | own domain's loss |",
            "|---|---|---|---|---|---|",
            *summary_rows(results),
        ]
    lines += [
        "",
        f"The steps took {minutes:.0f} min in all. This summary: "
        + versions_and_time(started, torch, transformers, trl),
    ]
    publish(lines, os.path.join(args.output_dir, "results.md"))


if __name__ == "__main__":
    main()
