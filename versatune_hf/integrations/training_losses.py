"""Per-domain training losses, read from the training forward passes the Trainer already runs (no second pass).

A forward hook on the model turns each training micro-batch's output into token-loss sums per row, and a caller-given
function names the domain of each row. Two output kinds are understood:

* TRL's fused LM head (`SFTTrainer` by default): `log_probs` and `label_mask` per next-token position;
* plain causal-LM outputs with `logits`, given `labels` in the forward call (the model's own shift is repeated here).

With padding-free batching the micro-batch is one row of concatenated sequences; its `position_ids` restart at 0 for
each sequence, which splits the row back into the sampler's rows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100

RowDomains = Callable[[int, int], Sequence[int]]
"""(micro-batch index within the optimizer step, number of rows) -> domain code of each row."""


class UnattributableBatchError(ValueError):
    """A training micro-batch whose token losses cannot be split by row."""


def token_losses(output: Any, labels: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per next-token position: the loss (0 where ignored) and whether it counts, both shaped `(rows, length − 1)`."""
    log_probs = getattr(output, "log_probs", None)
    label_mask = getattr(output, "label_mask", None)
    if log_probs is not None and label_mask is not None:
        return -log_probs.detach().float(), label_mask.detach()
    logits = getattr(output, "logits", None)
    if logits is None or labels is None:
        raise UnattributableBatchError(
            "The 'odm' strategy reads each domain's training loss from the model's forward pass, but this forward "
            "returned neither TRL's per-token log_probs nor logits with labels. Pass `labels` to the model (the "
            "Trainer does by default) and do not use a fused loss kernel that drops the logits."
        )
    targets = labels[:, 1:]
    mask = targets != IGNORE_INDEX
    losses = torch.stack(
        [
            F.cross_entropy(row_logits[:-1].detach().float(), row_targets, ignore_index=IGNORE_INDEX, reduction="none")
            for row_logits, row_targets in zip(logits, targets)
        ]
    )
    return losses, mask


def row_sums(
    losses: torch.Tensor, mask: torch.Tensor, position_ids: torch.Tensor | None, rows_per_batch: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token-loss sum and token count of each sampler row in a micro-batch.

    A batch of one row where up to `rows_per_batch` rows were sampled (padding-free) is split into its sequences
    where `position_ids` restart at 0; the loss at next-token position k belongs to the sequence of token k + 1.
    """
    if losses.shape[0] > 1 or rows_per_batch == 1 or position_ids is None:
        return (losses * mask).sum(dim=1), mask.sum(dim=1)
    sequence_of_token = torch.cumsum(position_ids[0] == 0, dim=0) - 1
    sequence_of_target = sequence_of_token[1:].clamp(min=0)
    sequences = int(sequence_of_token[-1].item()) + 1
    if sequences > rows_per_batch:
        raise UnattributableBatchError(
            f"A padding-free micro-batch holds {sequences} sequences but only {rows_per_batch} rows were sampled, so "
            "the 'odm' strategy cannot tell each sequence's domain. Set padding_free=False."
        )
    sums = torch.zeros(sequences, dtype=losses.dtype, device=losses.device)
    counts = torch.zeros(sequences, dtype=torch.long, device=losses.device)
    sums.index_add_(0, sequence_of_target, losses[0] * mask[0])
    counts.index_add_(0, sequence_of_target, mask[0].long())
    return sums, counts


class DomainTrainingLosses:
    """Sums the token losses of each domain over the training micro-batches of one optimizer step.

    Args:
        model (`torch.nn.Module`):
            The model the Trainer calls (its forward pass is observed, never changed).
        num_domains (`int`):
            Number of domain codes.
        row_domains (`RowDomains`):
            Names the domain code of each row of the `i`-th micro-batch of the current step.
        rows_per_batch (`int`):
            Sampler rows in one micro-batch of this process (the per-device batch size).
    """

    def __init__(self, model: torch.nn.Module, num_domains: int, row_domains: RowDomains, rows_per_batch: int):
        self.num_domains = num_domains
        self.row_domains = row_domains
        self.rows_per_batch = rows_per_batch
        self.micro_batch = 0
        self._sums: torch.Tensor | None = None
        self._counts: torch.Tensor | None = None
        self._handle = model.register_forward_hook(self._observe, with_kwargs=True)

    def _observe(self, module: torch.nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        if not module.training:
            return
        labels = kwargs.get("labels")
        if getattr(output, "log_probs", None) is None and labels is None:
            # A training forward without labels (a custom loss computes them elsewhere); TRL then runs a second,
            # fused forward with labels, which is the one observed.
            return
        losses, mask = token_losses(output, labels)
        sums, counts = row_sums(losses, mask, kwargs.get("position_ids"), self.rows_per_batch)
        codes = torch.as_tensor(list(self.row_domains(self.micro_batch, len(sums))), device=sums.device)
        if self._sums is None:
            self._start_step(sums.device)
        self._sums.index_add_(0, codes, sums.double())
        self._counts.index_add_(0, codes, counts.double())
        self.micro_batch += 1

    def _start_step(self, device: torch.device) -> None:
        self._sums = torch.zeros(self.num_domains, dtype=torch.float64, device=device)
        self._counts = torch.zeros(self.num_domains, dtype=torch.float64, device=device)

    def finish_step(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """This process's per-domain (token-loss sum, token count) of the finished step, as float64; then reset."""
        if self._sums is None:
            self._start_step(device)
        sums, counts = self._sums, self._counts
        self._sums = self._counts = None
        self.micro_batch = 0
        return sums, counts

    def remove(self) -> None:
        """Stop observing the model."""
        self._handle.remove()
