"""Measure reference losses: a reference model's eval loss on each domain's eval set, through the Trainer's own
evaluation loop, so that ℓ_ref and `eval_<domain>_loss` are the same quantity."""

from __future__ import annotations

import copy
import gc
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, Trainer
from trl import SFTTrainer
from trl.trainer.utils import add_fused_lm_head

from ..utils.logs import get_logger

logger = get_logger(__name__)

SFT_FUSED_OUTPUTS = ("log_probs", "entropy", "is_top1")
"""The per-token outputs `SFTTrainer.__init__` asks of its fused LM head (TRL 1.16)."""


def measure_reference_losses(
    reference: str | torch.nn.Module, trainer: Trainer, domains: list[str]
) -> dict[str, float]:
    """Evaluate `reference` (a model or a path/Hub id) on `trainer.eval_dataset[d]` for every domain `d`.

    The trainer's model is swapped for the reference model while `trainer.evaluation_loop` runs on each domain's
    eval set, so the batches, the loss (`compute_loss`: TRL's DFT or other loss types, label smoothing, a model's
    auxiliary losses) and the averaging over samples and processes are exactly those of `eval_<domain>_loss`. Under
    DeepSpeed ZeRO-3 the reference model is loaded and run partitioned across processes, like the trained one.
    """
    if trainer.is_fsdp_enabled:
        raise NotImplementedError(
            "reference_model is not supported with FSDP yet. Measure the reference model's eval loss per domain in a "
            "separate evaluation run and pass it as reference_losses={domain: loss}."
        )
    model = _load(reference, trainer)
    trained, metrics = trainer.model, copy.deepcopy(getattr(trainer, "_metrics", None))
    losses = {}
    try:
        trainer.model = model
        for domain in tqdm(domains, desc="VersaTune reference losses", disable=not trainer.is_world_process_zero()):
            output = trainer.evaluation_loop(
                trainer.get_eval_dataloader(domain),
                description=f"VersaTune reference loss ({domain})",
                prediction_loss_only=True,
                metric_key_prefix=f"eval_{domain}",
            )
            losses[domain] = float(output.metrics[f"eval_{domain}_loss"])
    finally:
        trainer.model = trained
        if metrics is not None:  # TRL's SFTTrainer keeps eval token metrics for its next log: not the reference's
            trainer._metrics = metrics
        del model
        gc.collect()
    logger.info(f"VersaTune reference losses: {losses}")
    return losses


def _load(reference: str | torch.nn.Module, trainer: Trainer) -> Any:
    """The reference model ready for evaluation on this process: on the trainer's device, or as a DeepSpeed engine
    (partitioned under ZeRO-3, a full copy otherwise) when the trainer runs DeepSpeed."""
    model = reference
    if isinstance(reference, str):
        logger.info(f"Loading reference model {reference} to measure reference losses.")
        # Under ZeRO-3 `from_pretrained` loads the weights partitioned (the Trainer's DeepSpeed config is active).
        model = AutoModelForCausalLM.from_pretrained(reference, dtype=trainer.model.dtype)
    if isinstance(trainer, SFTTrainer):
        # SFTTrainer patches its model's forward with a fused LM head and computes every loss through it (TRL does
        # the same to its reference models); the reference model needs the same forward.
        add_fused_lm_head(model, outputs=SFT_FUSED_OUTPUTS)
    if trainer.is_deepspeed_enabled:
        from trl.models.utils import prepare_deepspeed

        return prepare_deepspeed(model, trainer.accelerator)
    return model.to(trainer.args.device).eval()
