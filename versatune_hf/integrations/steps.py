"""How optimizer steps map to sampler draws: the arithmetic every rank does identically."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from transformers import TrainingArguments


class StepLayout(NamedTuple):
    """How optimizer steps map to sampler draws in this run.

    All ranks iterate the full sampler; one optimizer step consumes `draws_per_step` draws of it (the global batch:
    per-device batch × processes × gradient accumulation), and an epoch is `epoch_length` draws (`None`: a stream,
    which has no epochs) in `epoch_steps` optimizer steps.
    """

    epoch_steps: int
    draws_per_step: int
    epoch_length: int | None

    def position_of_step(self, step: int) -> int:
        """Global position of the first draw of optimizer step `step` (0-based)."""
        return draw_position_of_step(step, *self)

    def epoch_of_step(self, step: int) -> int:
        """The epoch the Trainer is in after `step` optimizer steps (what it replays on a resume from there)."""
        return 0 if self.epoch_length is None else step // self.epoch_steps

    def first_step_at_or_after(self, position: int) -> int:
        """The first optimizer step whose first draw is at `position` or later."""
        if self.epoch_length is None:
            return -(-position // self.draws_per_step)
        epoch, offset = divmod(position, self.epoch_length)
        step_in_epoch = -(-offset // self.draws_per_step)
        if step_in_epoch >= self.epoch_steps:
            return (epoch + 1) * self.epoch_steps
        return epoch * self.epoch_steps + step_in_epoch

    def describe(self) -> dict[str, int | None]:
        """The layout as JSON, for checkpoints."""
        return self._asdict()


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


def draws_per_step(args: TrainingArguments, per_device_batch: int, accelerator: Any | None) -> int:
    """Sampler draws one optimizer step consumes, counted the way accelerate deals batches to processes.

    Every rank's loader reads `per_device_batch` rows per micro-batch and accelerate gives each process its own
    batch (with `dispatch_batches`, process 0 reads them all and sends them out), so a micro-batch step draws
    `per_device_batch × processes`; with `split_batches` the loader's batch is split across processes instead, so it
    draws `per_device_batch`.
    """
    processes = accelerator.num_processes if accelerator is not None else args.world_size
    split = bool(getattr(accelerator, "split_batches", False))
    return per_device_batch * (1 if split else processes) * args.gradient_accumulation_steps


def default_switch_delay(args: TrainingArguments) -> int:
    """Optimizer steps after an evaluation before new weights apply, so that no rank has drawn that far yet.

    At an evaluation the loader of each rank has read ahead by at most one batch (accelerate's look-ahead), plus
    `workers × prefetch_factor` batches in flight, plus one batch in the batch sampler; this is that many batches
    rounded up to whole optimizer steps, plus one step of margin. Loaders that read further ahead (a packed stream,
    for example) are covered by the run itself, which never schedules before the furthest draw any rank has made.
    """
    workers = args.dataloader_num_workers
    prefetch = (args.dataloader_prefetch_factor or 2) if workers > 0 else 0
    ahead_batches = 2 + workers * prefetch
    return 1 + math.ceil(ahead_batches / args.gradient_accumulation_steps)
