"""The shared runner of the recipes: full fine-tuning of a LLaMA/Qwen model on a VersaTune mixture.

Every option is a command-line flag or a key of a YAML file given with `--config`, exactly as in TRL's own scripts
(`TrlParser`): `RecipeArguments` (data), `VersaTuneArguments` (the mixture: every `VersaTuneConfig` field as
`--versatune_<field>`), `SFTConfig` (training) and `ModelConfig` (model loading). A model recipe (`models.RECIPES`)
only sets different defaults. Entry points: `recipes/<model>.py` in a checkout, `python -m versatune_hf.recipes
<model>` from an installed package.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field
from typing import Any

import torch
import yaml
from datasets import Dataset
from transformers.hf_argparser import string_to_bool
from trl import ModelConfig, SFTConfig, TrlParser

from ..arguments import VersaTuneArguments
from ..demo.corpus import DATA_DIR, DEMO_DOMAINS
from ..demo.runner import conversation_texts
from ..demo.tiny import tiny_llama, train_tiny_tokenizer
from ..integrations.callback import VersaTuneCallback
from ..integrations.sft_trainer import VersaTuneSFTTrainer
from ..utils.jsonlines import JsonLinesFile
from ..utils.logs import get_logger
from .models import RECIPES
from .sft_data import PAPER_SOURCES, apply_overrides, build_mixture, mixture_from_dataset, read_mixture

logger = get_logger(__name__)

PAPER_TRAINING_DEFAULTS = dict(
    learning_rate=2e-5,
    lr_scheduler_type="cosine",
    warmup_steps=0.03,
    weight_decay=0.0,
    max_length=512,
    bf16=True,
    gradient_checkpointing=True,
    num_train_epochs=4,
    eval_strategy="epoch",
    save_strategy="epoch",
    logging_steps=10,
    report_to=["tensorboard"],
)
"""The paper's setup: full fine-tuning, lr 2e-5, cosine, warmup 3%, no weight decay, max length 512, bf16; four
epochs with the mixture updated after each (the reference code restarted four one-epoch runs; here it is one run)."""

SMOKE_DEFAULTS = dict(
    max_steps=20,
    eval_strategy="steps",
    eval_steps=10,
    save_strategy="steps",
    save_steps=10,
    logging_steps=5,
    bf16=False,
    gradient_checkpointing=False,
    report_to=[],
    per_device_train_batch_size=4,
    per_device_eval_batch_size=4,
    gradient_accumulation_steps=1,
    max_length=128,
    learning_rate=1e-3,
    eval_rows_per_domain=8,
    max_train_rows_per_domain=40,
)
"""A CPU-sized run of the same code path. Defaults only: a value set on the command line or in `--config` wins."""


@dataclass
class RecipeArguments:
    """Where the per-domain data comes from."""

    dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "One dataset with a domain column (--versatune_domain_column): a Hub id, a local data file "
            "(.json/.jsonl/.parquet/.csv) or a folder (data files such as train.jsonl/test.jsonl, or save_to_disk)."
        },
    )
    dataset_config: str | None = field(default=None, metadata={"help": "Configuration name of --dataset_name."})
    dataset_train_split: str = field(default="train", metadata={"help": "Split of --dataset_name to train on."})
    dataset_test_split: str = field(
        default="test",
        metadata={
            "help": "Split of --dataset_name whose rows are the eval sets (split by domain). Where the dataset has "
            "no such split, --eval_rows_per_domain rows of each domain are held out of the train split."
        },
    )
    mixture: str | None = field(
        default=None,
        metadata={"help": "YAML file {domain: source or {source, split, max_rows}}, one source per domain."},
    )
    dataset_override: list[str] = field(
        default_factory=list,
        metadata={
            "help": "domain=path_or_hub_id replacing (or adding) one domain's source; repeat the flag, or list "
            "several after it.",
            "action": "extend",
        },
    )
    eval_rows_per_domain: int = field(default=200, metadata={"help": "Rows held out per domain for its eval set."})
    max_train_rows_per_domain: int | None = field(default=None, metadata={"help": "Cap on train rows per domain."})
    smoke: bool = field(
        default=False,
        metadata={
            "help": "A CPU-sized run of this exact code path: 20 steps, fp32, on CPU where there is no GPU, on your "
            "data if given (else the bundled demo corpus), with a tiny model built on the spot unless "
            "--model_name_or_path is given. Values you set yourself win over the smoke sizes."
        },
    )


def smoke_sources(folder: str) -> dict[str, dict[str, Any]]:
    """The bundled demo corpus written as one local JSON-lines file per domain (the smoke run's "Hub")."""
    os.makedirs(folder, exist_ok=True)
    rows = JsonLinesFile(DATA_DIR / "train.jsonl").read() + JsonLinesFile(DATA_DIR / "eval.jsonl").read()
    mixture = {}
    for domain in DEMO_DOMAINS:
        path = os.path.join(folder, f"{domain}.jsonl")
        JsonLinesFile(path).rewrite({"messages": row["messages"]} for row in rows if row["domain"] == domain)
        mixture[domain] = {"source": path}
    return mixture


def mixture_of(recipe: RecipeArguments, column: str, output_dir: str) -> dict[str, dict[str, Any]]:
    """The sources to train on: one dataset, a mixture YAML, the smoke run's bundled corpus or the paper's six; then
    the command-line overrides."""
    if recipe.dataset_name and recipe.mixture:
        raise ValueError("Give the data either as one dataset (--dataset_name) or per domain (--mixture), not both.")
    if recipe.dataset_name:
        mixture = mixture_from_dataset(
            recipe.dataset_name, recipe.dataset_config, column, recipe.dataset_train_split, recipe.dataset_test_split
        )
    elif recipe.mixture:
        mixture = read_mixture(recipe.mixture)
    elif recipe.smoke:
        mixture = smoke_sources(os.path.join(output_dir, "smoke_data"))
    else:
        mixture = {domain: {"source": source} for domain, source in PAPER_SOURCES.items()}
    return apply_overrides(mixture, recipe.dataset_override)


def make_parser() -> TrlParser:
    return TrlParser((RecipeArguments, VersaTuneArguments, SFTConfig, ModelConfig))


def asks_for_smoke(argv: list[str]) -> bool:
    """Whether `--smoke` is on, on the command line or in the `--config` YAML file (read before the full parse, so
    that the smoke sizes can be defaults under what the user set)."""
    early = argparse.ArgumentParser(add_help=False)
    early.add_argument("--smoke", type=string_to_bool, nargs="?", const=True, default=None)
    early.add_argument("--config")
    known, _ = early.parse_known_args(argv)
    if known.smoke is not None:
        return known.smoke
    if known.config:
        with open(known.config, encoding="utf-8") as handle:
            return bool((yaml.safe_load(handle) or {}).get("smoke", False))
    return False


def parse(model: str, argv: list[str] | None = None) -> tuple[Any, ...]:
    """The recipe's arguments: the command line over `--config` over the smoke sizes over the model's defaults over
    the paper's."""
    argv = sys.argv[1:] if argv is None else argv
    parser = make_parser()
    parser.set_defaults(**{**PAPER_TRAINING_DEFAULTS, **RECIPES[model].defaults})
    if asks_for_smoke(argv):
        parser.set_defaults(**SMOKE_DEFAULTS, use_cpu=not torch.cuda.is_available())
    return parser.parse_args_and_config(argv)


def main(model: str, argv: list[str] | None = None) -> None:
    """Parse the command line (and `--config` YAML) over the defaults of recipe `model`, then train. A smoke run
    without its own `--model_name_or_path` trains a tiny model built on the spot."""
    recipe, versatune, training_args, model_args = parse(model, argv)
    tiny_model = recipe.smoke and model_args.model_name_or_path == RECIPES[model].model_name_or_path
    train(recipe, versatune, training_args, model_args, tiny_model=tiny_model)


def build_tiny_model(folder: str, train_dataset: Dataset) -> None:
    """A tiny LLaMA with a tokenizer trained on the train conversations, saved to `folder` (kept for a resume)."""
    if os.path.exists(os.path.join(folder, "config.json")):
        return
    tokenizer = train_tiny_tokenizer(conversation_texts(train_dataset), vocab_size=1024)
    tiny_llama(tokenizer, hidden_size=64).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    logger.info(f"Smoke run: a tiny model built on the spot is in {folder}.")


def train(
    recipe: RecipeArguments,
    versatune: VersaTuneArguments,
    training_args: SFTConfig,
    model_args: ModelConfig,
    tiny_model: bool = False,
) -> None:
    """Build the mixture (and with `tiny_model` a tiny model to train) and the trainer, train (resuming when asked),
    save the model."""
    training_args.model_init_kwargs = {
        "revision": model_args.model_revision,
        "dtype": model_args.dtype,
        "attn_implementation": model_args.attn_implementation,
        "trust_remote_code": training_args.trust_remote_code,
        **(training_args.model_init_kwargs or {}),
    }
    config = versatune.to_config()
    with training_args.main_process_first(desc="building the domain mixture"):
        train_dataset, eval_sets = build_mixture(
            mixture_of(recipe, config.domain_column, training_args.output_dir),
            recipe.eval_rows_per_domain,
            recipe.max_train_rows_per_domain,
            training_args.seed,
            config.domain_column,
        )
        if tiny_model:
            model_args.model_name_or_path = os.path.join(training_args.output_dir, "smoke_model")
            build_tiny_model(model_args.model_name_or_path, train_dataset)
    callback = VersaTuneCallback(config=config)
    trainer = VersaTuneSFTTrainer(
        model=model_args.model_name_or_path,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_sets,
        callbacks=[callback],
    )
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model(training_args.output_dir)
    trainer.accelerator.print(f"Final VersaTune weights: {callback.current_weights()}")
    # Leave together: a rank that exits while another still tears down its gloo/NCCL links can abort (SIGABRT).
    trainer.accelerator.wait_for_everyone()
    trainer.accelerator.end_training()
