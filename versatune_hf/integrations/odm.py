"""The training-time side of the `odm` strategy: per-domain training losses of each step, summed over processes,
turned into one Exp3 round (`mixing.online_mixing.odm_update`) every `odm_update_steps` optimizer steps."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from transformers import Trainer, TrainingArguments

from ..config import VersaTuneConfig
from ..mixing import BanditState, apply_guards, odm_update
from ..sampling import WeightedDomainSampler
from .steps import StepLayout
from .training_losses import DomainTrainingLosses
from .update import MixtureUpdate, named_metrics


class OnlineDataMixing:
    """Observes the per-domain training losses of a `Trainer`'s steps and plays the `odm` bandit rounds.

    Args:
        config ([`VersaTuneConfig`]):
            The options (`odm_smoothing`, `odm_update_steps` and the guards).
        trainer (`Trainer`):
            The trainer whose model's training forward passes are observed.
        args (`TrainingArguments`):
            Its arguments (packing, gradient accumulation).
        sampler ([`WeightedDomainSampler`]):
            The sampler that drew the rows; it names the domain of each draw position.
        layout (`StepLayout`):
            How optimizer steps map to draw positions.
    """

    kind = "train_loss"
    buffered_history = True
    logs_with_training_logs = True

    def __init__(
        self,
        config: VersaTuneConfig,
        trainer: Trainer,
        args: TrainingArguments,
        sampler: WeightedDomainSampler,
        layout: StepLayout,
    ) -> None:
        if not isinstance(sampler, WeightedDomainSampler):
            raise ValueError(
                "strategy='odm' needs the map-style WeightedDomainSampler to name the domain of each trained row; it "
                "does not support a WeightedDomainStream yet. Train on a `datasets.Dataset` with a domain column, "
                "or use an eval-loss strategy such as 'versatune'."
            )
        if getattr(trainer, "padding_free", False) and getattr(args, "packing", False):
            raise ValueError(
                "strategy='odm' reads each row's training loss, but packing=True with padding-free batches "
                "concatenates packed rows into one sequence whose row boundaries are lost. Set padding_free=False "
                "(with packing_strategy='wrapped' if needed), or use an eval-loss strategy."
            )
        accelerator = trainer.accelerator
        if accelerator.num_processes > 1 and getattr(accelerator, "dispatch_batches", False):
            raise ValueError(
                "strategy='odm' names each process's rows from its own sampler, but with dispatch_batches=True only "
                "process 0 draws them. Set accelerator_config={'dispatch_batches': False}."
            )
        self.config = config
        self.trainer = trainer
        self.sampler = sampler
        self.layout = layout
        self.bandit = BanditState.start(sampler.domains)
        self._round_totals = self._empty_totals()
        self._processes = accelerator.num_processes
        self._rank = accelerator.process_index
        self._rows_per_batch = layout.draws_per_step // (self._processes * args.gradient_accumulation_steps)
        self._losses = DomainTrainingLosses(
            trainer.model, len(sampler.domains), self._row_domains, self._rows_per_batch
        )

    def _empty_totals(self) -> list[list[float]]:
        return [[0.0] * len(self.sampler.domains) for _ in range(2)]

    def _row_domains(self, micro_batch: int, rows: int) -> list[int]:
        """Domain codes of the rows of this process's `micro_batch`-th micro-batch of the optimizer step in progress.

        Every process draws the whole sampler stream; accelerate hands batch `k` of it to process `k % processes`, so
        row `j` of this process's micro-batch `m` of step `s` is the draw at `position(s) + (m·processes + rank)·batch
        + j`. A process's last batch of an epoch is padded by accelerate with the epoch's first rows.
        """
        step = self.trainer.state.global_step
        first = (
            self.layout.position_of_step(step) + (micro_batch * self._processes + self._rank) * self._rows_per_batch
        )
        epoch_length = self.layout.epoch_length
        epoch_start = self.layout.epoch_of_step(step) * epoch_length
        positions = epoch_start + (np.arange(first, first + rows) - epoch_start) % epoch_length
        return self.sampler.drawn_codes(positions).tolist()

    def end_step(self, step: int, weights: dict[str, float]) -> MixtureUpdate | None:
        """Add the finished step's losses (summed over processes) to the round; play the round when it is due.

        One collective call per step gathers every process's sums and token counts and its furthest draw.
        """
        accelerator = self.trainer.accelerator
        sums, counts = self._losses.finish_step(accelerator.device)
        position = torch.tensor([float(self.sampler.position)], dtype=torch.float64, device=accelerator.device)
        gathered = accelerator.gather(torch.cat([sums, counts, position])).reshape(self._processes, -1).cpu()
        domains = len(self.sampler.domains)
        step_sums, step_counts = gathered[:, :domains].sum(0).tolist(), gathered[:, domains:-1].sum(0).tolist()
        self._round_totals = [
            [before + added for before, added in zip(round_values, step_values)]
            for round_values, step_values in zip(self._round_totals, (step_sums, step_counts))
        ]
        if step % self.config.odm_update_steps != 0:
            return None
        round_sums, round_counts = self._round_totals
        names = self.sampler.domains
        rewards = {
            name: round_sums[code] / round_counts[code] for code, name in enumerate(names) if round_counts[code]
        }
        drawn_with = self.sampler.weights_at(max(self.layout.position_of_step(step) - 1, 0))
        result = odm_update(drawn_with, rewards, self.bandit, self.config.odm_smoothing)
        self.bandit = result.state
        self._round_totals = self._empty_totals()
        new_weights = apply_guards(weights, result.weights, self.config.update_params())
        record = {
            "rewards": result.rewards,
            "reward_tokens": dict(zip(names, round_counts)),
            "estimates": result.state.estimates,
            "exploration": result.exploration,
            "round": result.state.rounds,
            "drawn_with": drawn_with,
        }
        metrics = {**named_metrics("reward", result.rewards), **named_metrics("estimate", result.state.estimates)}
        return MixtureUpdate(new_weights, record, metrics, furthest_draw=int(gathered[:, -1].max().item()))

    def next_window_start(self, trained_position: int, switch_position: int) -> int:
        """Realised counts cover each round's trained rows: the next round starts where this one ended."""
        return trained_position

    def close(self) -> None:
        """Stop observing the model."""
        self._losses.remove()

    def state_dict(self) -> dict[str, Any]:
        """The bandit and the current round's partial (token-loss sum, token count) per domain, identical on every
        rank (the sums are gathered from all), so a checkpoint taken inside a round resumes it exactly."""
        return {
            "kind": self.kind,
            "bandit": self.bandit.state_dict(),
            "round_totals": [list(totals) for totals in self._round_totals],
        }

    def load_state_dict(self, state: dict[str, Any], keep_reference_losses: bool = False) -> None:
        self.bandit = BanditState.from_state_dict(state["bandit"])
        self._round_totals = [[float(value) for value in totals] for totals in state["round_totals"]]
