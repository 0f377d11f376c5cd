"""Measure reference losses: a reference model's eval loss on each domain's eval set."""

from __future__ import annotations

from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM
from transformers.utils import logging

logger = logging.get_logger(__name__)


@torch.no_grad()
def measure_reference_losses(reference: str | torch.nn.Module, trainer: Any, domains: list[str]) -> dict[str, float]:
    """Evaluate `reference` (a model or a path/Hub id) on `trainer.eval_dataset[d]` for every domain `d`.

    The batches come from `trainer.get_eval_dataloader(d)`, so they are tokenized and collated exactly as for the
    trained model, and the loss is averaged the way `Trainer.evaluate` averages `eval_loss` (the mean over samples of
    each batch's loss, gathered across processes), so ℓ_ref and ℓ are directly comparable.
    """
    model = reference
    if isinstance(reference, str):
        logger.info(f"Loading reference model {reference} to measure reference losses.")
        model = AutoModelForCausalLM.from_pretrained(reference, dtype=trainer.model.dtype)
    model = model.to(trainer.args.device).eval()
    losses = {}
    for domain in tqdm(domains, desc="VersaTune reference losses", disable=not trainer.is_world_process_zero()):
        per_sample = []
        for batch in trainer.get_eval_dataloader(domain):
            loss = model(**batch).loss.detach().float()
            per_sample.append(trainer.accelerator.gather_for_metrics(loss.repeat(batch["input_ids"].shape[0])))
        losses[domain] = torch.cat(per_sample).mean().item()
    logger.info(f"VersaTune reference losses: {losses}")
    return losses
