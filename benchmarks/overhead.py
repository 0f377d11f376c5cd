"""What VersaTune costs outside evaluation: training steps/s with the Trainer's default sampler vs with VersaTune
(and with the `odm` strategy, which works on every step), sampler draws/s in isolation, and sampler memory per
million rows. All numbers come from one run of this script.

    python benchmarks/overhead.py --output benchmarks/results/overhead.md

Training runs alternate (default, VersaTune, odm, default, ...) on the same tiny model and data; all evaluate every
domain at the same steps, and the evaluation time (the Trainer's `eval_*_runtime`) is subtracted from
`train_runtime`, as are VersaTune's one-time setup and its per-evaluation update (timed and reported on their own),
so the ratio compares only the training steps: what the weighted sampler costs per batch, and for odm also its
per-step work (reading each row's loss from the forward pass, the all-reduce, the bandit round and its history
line).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
import tracemalloc

import numpy as np
import torch
import transformers
import trl
from report import publish
from torch.utils.data import RandomSampler
from trl import SFTConfig, SFTTrainer

from versatune_hf import VersaTuneCallback, WeightedDomainSampler
from versatune_hf.demo.tiny import TOY_VOCAB, tiny_llama, toy_corpus, toy_eval_sets, train_tiny_tokenizer

DOMAINS = sorted(TOY_VOCAB)


class TimedVersaTuneCallback(VersaTuneCallback):
    """VersaTuneCallback that accumulates the time of its one-time setup and of its per-evaluation updates."""

    seconds = {"setup": 0.0, "updates": 0.0}

    def on_train_begin(self, *args, **kwargs):
        start = time.perf_counter()
        super().on_train_begin(*args, **kwargs)
        self.seconds["setup"] += time.perf_counter() - start

    def on_evaluate(self, *args, **kwargs):
        start = time.perf_counter()
        super().on_evaluate(*args, **kwargs)
        self.seconds["updates"] += time.perf_counter() - start


def training_seconds_outside_eval(strategy: str | None, corpus, tokenizer, steps: int, output_dir: str) -> float:
    """`train_runtime` minus the Trainer's evaluation time and, for VersaTune, minus its setup and update time."""
    TimedVersaTuneCallback.seconds = {"setup": 0.0, "updates": 0.0}
    trainer = SFTTrainer(
        model=tiny_llama(tokenizer),
        args=SFTConfig(
            output_dir=output_dir,
            max_steps=steps,
            eval_strategy="steps",
            eval_steps=steps // 4,
            per_device_train_batch_size=8,
            learning_rate=1e-3,
            max_length=64,
            save_strategy="no",
            report_to=[],
            use_cpu=True,
            bf16=False,
            disable_tqdm=True,
            logging_steps=steps // 4,
            seed=0,
        ),
        train_dataset=corpus,
        eval_dataset=toy_eval_sets(DOMAINS, rows=16),
        processing_class=tokenizer,
        callbacks=[] if strategy is None else [TimedVersaTuneCallback(train_dataset=corpus, strategy=strategy)],
    )
    output = trainer.train()
    evaluation = sum(
        v
        for entry in trainer.state.log_history
        for k, v in entry.items()
        if k.endswith("_runtime") and k.startswith("eval_")
    )
    return output.metrics["train_runtime"] - evaluation - sum(TimedVersaTuneCallback.seconds.values())


def draws_per_second(sampler, draws: int) -> float:
    iterator = iter(sampler)
    start = time.perf_counter()
    for _ in range(draws):
        next(iterator)
    return draws / (time.perf_counter() - start)


def sampler_memory_per_million_rows() -> float:
    labels = np.array(["law", "code", "medicine", "finance", "science", "other"] * (1_000_000 // 6 + 1))[:1_000_000]
    tracemalloc.start()
    sampler = WeightedDomainSampler(labels, seed=0)
    for _ in sampler:
        pass
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del labels
    return peak / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", default=None)
    args = parser.parse_args()

    corpus = toy_corpus({d: 2000 for d in DOMAINS})
    tokenizer = train_tiny_tokenizer(corpus["text"], vocab_size=400)
    arms = {"default": None, "versatune": "versatune", "odm": "odm"}
    timings = {name: [] for name in arms}
    setup, updates = [], []
    for repeat in range(args.repeats):
        for name, strategy in arms.items():
            seconds = training_seconds_outside_eval(strategy, corpus, tokenizer, args.steps, f"/tmp/oh-{name}")
            timings[name].append(seconds)
            if name == "versatune":
                setup.append(TimedVersaTuneCallback.seconds["setup"])
                updates.append(TimedVersaTuneCallback.seconds["updates"] / 4)
            print(f"repeat {repeat}: {name:9s} {seconds:.2f} s outside evaluation for {args.steps} steps", flush=True)
    ratios = {name: [v / d for v, d in zip(timings[name], timings["default"])] for name in ("versatune", "odm")}
    per_step_ms = {
        name: (statistics.median(timings[name]) - statistics.median(timings["default"])) / args.steps * 1e3
        for name in ratios
    }

    labels = np.repeat(np.array(DOMAINS), 1_000_000 // len(DOMAINS) + 1)[:1_000_000]
    weighted = WeightedDomainSampler(labels, {"code": 0.2, "law": 0.3, "medicine": 0.5}, seed=0)
    weighted.set_weights({"code": 0.5, "law": 0.3, "medicine": 0.2}, 500_000)
    versatune_rate = draws_per_second(weighted, 1_000_000)
    torch_rate = draws_per_second(
        RandomSampler(range(1_000_000), generator=torch.Generator().manual_seed(0)), 1_000_000
    )
    memory = sampler_memory_per_million_rows()

    lines = [
        "# VersaTune overhead",
        "",
        f"Command: `python benchmarks/overhead.py --steps {args.steps} --repeats {args.repeats}`; "
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads; "
        f"torch {torch.__version__}, transformers {transformers.__version__}, trl {trl.__version__}.",
        "",
        "Tiny LLaMA (hidden 64, 2 layers), 3 domains x 2,000 rows, batch 8, max length 64, evaluation of every domain "
        f"every {args.steps // 4} steps in both arms; evaluation time subtracted.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| training time outside evaluation, default sampler (median of {args.repeats}) | "
        f"{statistics.median(timings['default']):.2f} s for {args.steps} steps |",
        f"| training time outside evaluation, VersaTune (median of {args.repeats}) | "
        f"{statistics.median(timings['versatune']):.2f} s for {args.steps} steps |",
        f"| VersaTune / default, per repeat | {', '.join(f'{r:.3f}' for r in ratios['versatune'])} |",
        f"| VersaTune / default, median | {statistics.median(ratios['versatune']):.3f} |",
        f"| difference per training step (median) | {per_step_ms['versatune']:.3f} ms |",
        f"| training time outside evaluation, odm (median of {args.repeats}) | "
        f"{statistics.median(timings['odm']):.2f} s for {args.steps} steps |",
        f"| odm / default, per repeat | {', '.join(f'{r:.3f}' for r in ratios['odm'])} |",
        f"| odm / default, median | {statistics.median(ratios['odm']):.3f} |",
        f"| odm difference per training step (median) | {per_step_ms['odm']:.3f} ms |",
        f"| VersaTune one-time setup at train start (median) | {statistics.median(setup) * 1e3:.1f} ms |",
        f"| VersaTune update per evaluation (median) | {statistics.median(updates) * 1e3:.1f} ms |",
        f"| WeightedDomainSampler draws/s (1M rows, one weight switch) | {versatune_rate:,.0f} |",
        f"| torch RandomSampler draws/s (1M rows) | {torch_rate:,.0f} |",
        f"| sampler peak memory per million rows (construction + one epoch) | {memory:.1f} MiB |",
    ]
    publish(lines, args.output)


if __name__ == "__main__":
    main()
