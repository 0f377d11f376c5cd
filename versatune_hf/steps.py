"""How optimizer steps map to sampler draws: the arithmetic every rank does identically."""

from __future__ import annotations

import math
from typing import NamedTuple

from transformers import TrainingArguments


class StepLayout(NamedTuple):
    """How optimizer steps map to sampler draws in this run."""

    epoch_steps: int
    draws_per_step: int
    epoch_length: int | None


def steps_per_epoch(loader_batches: int, gradient_accumulation_steps: int) -> int:
    """Optimizer steps in one epoch, computed exactly as `Trainer.set_initial_training_values` does."""
    return max(
        loader_batches // gradient_accumulation_steps + int(loader_batches % gradient_accumulation_steps > 0), 1
    )


def draw_position_of_step(step: int, epoch_steps: int, draws_per_step: int, epoch_length: int | None) -> int:
    """Global sampler position of the first draw of optimizer step `step` (0-based), the same on every rank.

    All ranks iterate the full sampler; one optimizer step consumes `draws_per_step` = per-device batch ×
    processes × gradient accumulation draws of it, and an epoch is `epoch_length` draws (`None`: a stream, which
    has no epochs).
    """
    if epoch_length is None:
        return step * draws_per_step
    epoch, step_in_epoch = divmod(step, epoch_steps)
    return epoch * epoch_length + min(step_in_epoch * draws_per_step, epoch_length)


def default_switch_delay(args: TrainingArguments) -> int:
    """Optimizer steps after an evaluation before new weights apply, so that no rank has drawn that far yet.

    At an evaluation the loader of each rank has read ahead by at most one batch (accelerate's look-ahead), plus
    `workers × prefetch_factor` batches in flight, plus one batch in the batch sampler; this is that many batches
    rounded up to whole optimizer steps, plus one step of margin.
    """
    workers = args.dataloader_num_workers
    prefetch = (args.dataloader_prefetch_factor or 2) if workers > 0 else 0
    ahead_batches = 2 + workers * prefetch
    return 1 + math.ceil(ahead_batches / args.gradient_accumulation_steps)
