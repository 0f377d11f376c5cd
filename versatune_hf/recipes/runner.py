"""The shared runner of `recipes/*.py`: full fine-tuning of a LLaMA/Qwen model on a VersaTune mixture.

Every option is a command-line flag or a key of a YAML file given with `--config`, exactly as in TRL's own scripts
(`TrlParser`): `RecipeArguments` (data), `VersaTuneArguments` (the mixture), `SFTConfig` (training) and
`ModelConfig` (model loading). A model recipe only sets different defaults.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

from trl import ModelConfig, SFTConfig, TrlParser

from ..demo.corpus import DATA_DIR, DEMO_DOMAINS
from ..integrations.callback import VersaTuneCallback
from ..integrations.sft_trainer import VersaTuneSFTTrainer
from ..mixing.initial_weights import read_domain_values
from ..utils.jsonlines import JsonLinesFile
from ..utils.logs import get_logger
from .sft_data import PAPER_SOURCES, apply_overrides, build_mixture, read_mixture

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

SMOKE_OVERRIDES = dict(  # a CPU-sized run of the same code path; these win over command-line values
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
)


@dataclass
class RecipeArguments:
    """Where the per-domain data comes from."""

    mixture: str | None = field(
        default=None,
        metadata={
            "help": "YAML file {domain: source or {source, split, max_rows}}; default: the paper's six sources."
        },
    )
    dataset_override: list[str] = field(
        default_factory=list, metadata={"help": "domain=path_or_hub_id replacing (or adding) one domain's source."}
    )
    eval_rows_per_domain: int = field(default=200, metadata={"help": "Rows held out per domain for its eval set."})
    max_train_rows_per_domain: int | None = field(default=None, metadata={"help": "Cap on train rows per domain."})
    smoke: bool = field(
        default=False,
        metadata={
            "help": "CPU smoke run of this exact code path: the bundled demo corpus as local files, 20 steps, fp32. "
            "Pair it with a small local --model_name_or_path."
        },
    )


@dataclass
class VersaTuneArguments:
    """The mixture strategy (the `VersaTuneConfig` fields, with a `versatune_` prefix)."""

    versatune_strategy: str = field(default="versatune", metadata={"help": "Mixture strategy."})
    versatune_eta: float = field(default=1.0, metadata={"help": "Step size of the multiplicative update."})
    versatune_forgetting_weight: float = field(default=0.0, metadata={"help": "λ, the weight of forgetting φ."})
    versatune_initial_weights: str = field(
        default="uniform", metadata={"help": "'uniform', 'proportional' or a detect.json / shares JSON file."}
    )
    versatune_reference_losses: str | None = field(
        default=None, metadata={"help": "JSON file {domain: reference eval loss}."}
    )
    versatune_reference_model: str | None = field(
        default=None, metadata={"help": "Model whose eval losses become the reference losses at train start."}
    )
    versatune_min_weight: float = field(default=0.01, metadata={"help": "Floor on every domain weight."})
    versatune_target_domain: str | None = field(default=None, metadata={"help": "Target of the 'expansion' strategy."})
    versatune_target_max_weight: float = field(default=0.9, metadata={"help": "Cap of the expansion target's share."})
    versatune_odm_update_steps: int = field(default=1, metadata={"help": "Optimizer steps per 'odm' bandit round."})
    versatune_odm_smoothing: float = field(default=0.9, metadata={"help": "α of the 'odm' reward estimate."})

    def callback(self) -> VersaTuneCallback:
        reference_losses = None
        if self.versatune_reference_losses:
            reference_losses = read_domain_values(self.versatune_reference_losses, "reference_losses")
        return VersaTuneCallback(
            strategy=self.versatune_strategy,
            eta=self.versatune_eta,
            forgetting_weight=self.versatune_forgetting_weight,
            initial_weights=self.versatune_initial_weights,
            reference_losses=reference_losses,
            reference_model=self.versatune_reference_model,
            min_weight=self.versatune_min_weight,
            target_domain=self.versatune_target_domain,
            target_max_weight=self.versatune_target_max_weight,
            odm_update_steps=self.versatune_odm_update_steps,
            odm_smoothing=self.versatune_odm_smoothing,
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


def mixture_of(recipe: RecipeArguments, output_dir: str) -> dict[str, dict[str, Any]]:
    """The sources to train on: smoke files, a mixture YAML or the paper's six, then the command-line overrides."""
    if recipe.smoke:
        mixture = smoke_sources(os.path.join(output_dir, "smoke_data"))
    elif recipe.mixture:
        mixture = read_mixture(recipe.mixture)
    else:
        mixture = {domain: {"source": source} for domain, source in PAPER_SOURCES.items()}
    return apply_overrides(mixture, recipe.dataset_override)


def make_parser() -> TrlParser:
    return TrlParser((RecipeArguments, VersaTuneArguments, SFTConfig, ModelConfig))


def main(**defaults: Any) -> None:
    """Parse the command line (and `--config` YAML) over these defaults, then train."""
    parser = make_parser()
    parser.set_defaults(**{**PAPER_TRAINING_DEFAULTS, **defaults})
    recipe, versatune, training_args, model_args = parser.parse_args_and_config()
    if recipe.smoke:
        training_args = dataclasses.replace(training_args, **SMOKE_OVERRIDES)
    train(recipe, versatune, training_args, model_args)


def train(recipe: RecipeArguments, versatune: VersaTuneArguments, training_args: SFTConfig, model_args: ModelConfig):
    """Build the mixture and the trainer, train (resuming when asked), save the model."""
    training_args.model_init_kwargs = {
        "revision": model_args.model_revision,
        "dtype": model_args.dtype,
        "attn_implementation": model_args.attn_implementation,
        "trust_remote_code": training_args.trust_remote_code,
        **(training_args.model_init_kwargs or {}),
    }
    with training_args.main_process_first(desc="building the domain mixture"):
        train_dataset, eval_sets = build_mixture(
            mixture_of(recipe, training_args.output_dir),
            recipe.eval_rows_per_domain,
            recipe.max_train_rows_per_domain,
            training_args.seed,
        )
    callback = versatune.callback()
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
