"""Domain expansion (the paper's Table 5 setting) on the bundled corpus: strengthen `law`, keep the other domains.

    pip install -e ".[benchmarks]"
    python benchmarks/domain_expansion.py --seeds 0,1,2 --output-dir benchmarks/results/domain_expansion
    python benchmarks/domain_expansion.py --base bundled --output-dir benchmarks/results/domain_expansion_pretrained

Per seed, a tiny LLaMA is first fine-tuned on the uniform mixture (the "base model", which knows every domain a
little; from scratch with `--base none`, from the pretrained base of `benchmarks/pretrained_base.py` with
`--base bundled`), then training continues from it with three mixtures:

* `100% target`: only law;
* `target + uniform others`: law 0.5, the other five domains 0.1 each (fixed);
* `VersaTune expansion`: starts like the previous one; law grows toward 0.9 while its learnable potential γ stays
  positive (reference losses: the bundled ones of the tiny model, or those saved with the pretrained base), the
  others share the rest ∝ w·exp(φ).

At every evaluation round it reports the target's gain (relative decrease of law's eval loss from the base model,
%) and the other domains' summed degradation (Σ over the five of the relative increase of their eval loss from the
base model, %; negative = they still improved), the eval-loss analogue of the paper's Table 5. From a pretrained
base it also reports forgetting of pretraining knowledge: the summed relative increase, over all six domains, of the
loss on held-out pretraining text from the pretrained base to the end of the expansion.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import matplotlib
import torch
import transformers
import trl

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from base_regime import add_base_argument, base_model, forgetting, model_option, raw_losses, reference_losses  # noqa: E402
from report import versions_and_time  # noqa: E402

from versatune_hf.demo.corpus import DEMO_DOMAINS, load_demo_corpus  # noqa: E402
from versatune_hf.demo.runner import DemoArguments, conversation_texts, run_strategy  # noqa: E402

TARGET = "law"
OTHERS = [domain for domain in DEMO_DOMAINS if domain != TARGET]
CONFIGS = {
    "100% target": dict(strategy="static", initial_weights={TARGET: 1.0, **dict.fromkeys(OTHERS, 0.0)}),
    "target + uniform others": dict(strategy="static", initial_weights={TARGET: 0.5, **dict.fromkeys(OTHERS, 0.1)}),
    "VersaTune expansion": dict(
        strategy="expansion",
        target_domain=TARGET,
        target_max_weight=0.9,
        initial_weights={TARGET: 0.5, **dict.fromkeys(OTHERS, 0.1)},
    ),
}


def changes(curves: dict[str, list[tuple[int, float]]]) -> list[dict]:
    """Per evaluation round: the target's gain and the others' summed degradation, in % of the base model's loss."""
    rounds = []
    for index, (step, _) in enumerate(curves[TARGET]):
        base = {d: curves[d][0][1] for d in curves}
        now = {d: curves[d][index][1] for d in curves}
        rounds.append(
            {
                "step": step,
                "target_gain": 100 * (base[TARGET] - now[TARGET]) / base[TARGET],
                "others_degradation": sum(100 * (now[d] - base[d]) / base[d] for d in OTHERS),
            }
        )
    return rounds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--base-steps", type=int, default=200)
    parser.add_argument("--expansion-steps", type=int, default=200)
    parser.add_argument("--eval-steps", type=int, default=50)
    parser.add_argument("--output-dir", default="benchmarks/results/domain_expansion")
    add_base_argument(parser)
    args = parser.parse_args()
    started = time.time()
    pretrained = base_model(args.base)
    pretrained_losses = raw_losses(pretrained, pretrained) if pretrained else None
    forgotten: dict[str, list[float]] = {name: [] for name in CONFIGS}
    os.makedirs(args.output_dir, exist_ok=True)
    train, eval_sets = load_demo_corpus()
    texts = conversation_texts(train)
    seeds = [int(seed) for seed in args.seeds.split(",")]
    results: dict[str, list[list[dict]]] = {name: [] for name in CONFIGS}
    work = os.path.join(args.output_dir, "runs")
    for seed in seeds:
        base_dir = os.path.join(work, f"seed{seed}", "base")
        base = DemoArguments(
            model=model_option(pretrained),
            max_steps=args.base_steps,
            eval_steps=args.eval_steps,
            seed=seed,
            reference_losses="none",
        )
        run_strategy(base, "uniform", train, eval_sets, texts, base_dir, save_to=os.path.join(base_dir, "model"))
        for name, options in CONFIGS.items():
            expansion = DemoArguments(
                model=os.path.join(base_dir, "model"),
                max_steps=args.expansion_steps,
                eval_steps=args.eval_steps,
                seed=seed,
                reference_losses=reference_losses(pretrained),
            )
            run_dir = os.path.join(work, f"seed{seed}", name.replace(" ", "_").replace("%", "pct"))
            _, curves = run_strategy(
                expansion,
                options["strategy"],
                train,
                eval_sets,
                texts,
                run_dir,
                save_to=os.path.join(run_dir, "model") if pretrained else None,
                **{key: value for key, value in options.items() if key != "strategy"},
            )
            results[name].append(changes(curves))
            if pretrained:
                after = raw_losses(os.path.join(run_dir, "model"), pretrained)
                forgotten[name].append(sum(forgetting(after, pretrained_losses).values()))
            print(f"seed {seed} {name}: {results[name][-1][-1]}", flush=True)
    write_report(results, forgotten if pretrained else None, seeds, args, started)


def write_report(
    results: dict[str, list[list[dict]]], forgotten: dict[str, list[float]] | None, seeds: list[int], args, started
) -> None:
    def mean_std(values: list[float]) -> str:
        return f"{statistics.mean(values):+.2f} ± {statistics.stdev(values) if len(values) > 1 else 0.0:.2f}"

    steps = [r["step"] for r in next(iter(results.values()))[0]]
    lines = [
        "# Domain expansion: target law" + (", from a pretrained base" if forgotten else ""),
        "",
        f"Command: `python benchmarks/domain_expansion.py --seeds {args.seeds} --base-steps {args.base_steps} "
        f"--expansion-steps {args.expansion_steps} --eval-steps {args.eval_steps} --base {args.base}`; "
        f"{(time.time() - started) / 60:.1f} min on 2 CPU "
        f"cores. Seeds {seeds}; mean ± standard deviation over seeds. Target gain: decrease of law's eval loss from "
        "the base model (%, higher is better). Others' degradation: sum over the five other domains of the increase "
        "of their eval loss from the base model (%, lower is better; negative means they still improved).",
        "",
        "| expansion step | config | target gain % | others' summed degradation % |",
        "|---|---|---|---|",
    ]
    for index, step in enumerate(steps[1:], start=1):
        for name, runs in results.items():
            gain = [run[index]["target_gain"] for run in runs]
            degradation = [run[index]["others_degradation"] for run in runs]
            lines.append(f"| {step} | {name} | {mean_std(gain)} | {mean_std(degradation)} |")
    if forgotten:
        lines += [
            "",
            "Forgetting of pretraining knowledge at the end (sum over the six domains of the relative increase of the "
            "loss on held-out pretraining text from the pretrained base, %; lower is better):",
            "",
            "| config | summed pretraining-text forgetting % |",
            "|---|---|",
        ]
        lines += [f"| {name} | {mean_std(values)} |" for name, values in forgotten.items()]
    lines += ["", versions_and_time(started, torch, transformers, trl)]
    report = "\n".join(lines) + "\n"
    with open(os.path.join(args.output_dir, "results.md"), "w", encoding="utf-8") as handle:
        handle.write(report)
    with open(os.path.join(args.output_dir, "results.json"), "w", encoding="utf-8") as handle:
        json.dump({"rounds": results, "pretraining_forgetting": forgotten}, handle, indent=1)
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for name, runs in results.items():
        for axes, key in ((left, "target_gain"), (right, "others_degradation")):
            means = [statistics.mean(run[i][key] for run in runs) for i in range(len(steps))]
            axes.plot(steps, means, marker="o", label=name)
    left.set_title("law: eval-loss gain over the base model (%)")
    right.set_title("other five domains: summed eval-loss degradation (%)")
    for axes in (left, right):
        axes.set_xlabel("expansion step")
        axes.grid(alpha=0.3)
    right.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(os.path.join(args.output_dir, "domain_expansion.png"), dpi=110)
    print(report)


if __name__ == "__main__":
    main()
