"""The training-time side of the `odm` strategy: per-domain training losses of each step, all-reduced over
processes, turned into one Exp3 round (`online_mixing.odm_update`) every `odm_update_steps` optimizer steps."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from transformers import Trainer, TrainingArguments

from .online_mixing import BanditRound, BanditState, odm_update
from .sampler import WeightedDomainSampler
from .steps import StepLayout, draw_position_of_step
from .training_losses import DomainTrainingLosses


@dataclass
class PlayedRound:
    """A finished round: the bandit's result, the rewards' token counts, the weights the round's rows were drawn
    with, and the draw positions the round trained on."""

    result: BanditRound
    reward_tokens: dict[str, float]
    drawn_with: dict[str, float]
    window: tuple[int, int]


class OnlineDataMixing:
    """Observes the per-domain training losses of a `Trainer`'s steps and plays the `odm` bandit rounds.

    Args:
        trainer (`Trainer`):
            The trainer whose model's training forward passes are observed.
        args (`TrainingArguments`):
            Its arguments (packing, gradient accumulation).
        sampler ([`WeightedDomainSampler`]):
            The sampler that drew the rows; it names the domain of each draw position.
        layout (`StepLayout`):
            How optimizer steps map to draw positions.
        smoothing (`float`):
            α of the reward estimate.
        update_steps (`int`):
            Optimizer steps per round.
    """

    def __init__(
        self,
        trainer: Trainer,
        args: TrainingArguments,
        sampler: WeightedDomainSampler,
        layout: StepLayout,
        smoothing: float,
        update_steps: int,
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
        self.trainer = trainer
        self.sampler = sampler
        self.layout = layout
        self.smoothing = smoothing
        self.update_steps = update_steps
        self.bandit = BanditState.start(sampler.domains)
        self._round_totals = self._empty_totals()
        self._processes = trainer.accelerator.num_processes
        self._rank = trainer.accelerator.process_index
        self._rows_per_batch = layout.draws_per_step // (self._processes * args.gradient_accumulation_steps)
        self._domain_code = {domain: code for code, domain in enumerate(sampler.domains)}
        self._losses = DomainTrainingLosses(
            trainer.model, len(sampler.domains), self._row_domains, self._rows_per_batch
        )

    def _empty_totals(self) -> list[list[float]]:
        return [[0.0] * len(self.sampler.domains) for _ in range(2)]

    def state_dict(self) -> dict[str, Any]:
        """The bandit and the current round's partial (token-loss sum, token count) per domain, identical on every
        rank (the sums are all-reduced), so a checkpoint taken inside a round resumes it exactly."""
        return {"bandit": self.bandit.state_dict(), "round_totals": [list(t) for t in self._round_totals]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.bandit = BanditState.from_state_dict(state["bandit"])
        self._round_totals = [list(totals) for totals in state["round_totals"]]

    def _row_domains(self, micro_batch: int, rows: int) -> list[int]:
        """Domain codes of the rows of this process's `micro_batch`-th micro-batch of the optimizer step in progress.

        Every process draws the whole sampler stream; accelerate hands batch `k` of it to process `k % processes`, so
        row `j` of this process's micro-batch `m` of step `s` is the draw at `position(s) + (m·processes + rank)·batch
        + j`. A process's last batch of an epoch is padded by accelerate with the epoch's first rows.
        """
        step = self.trainer.state.global_step
        first = (
            draw_position_of_step(step, *self.layout)
            + (micro_batch * self._processes + self._rank) * self._rows_per_batch
        )
        epoch_length = self.layout.epoch_length
        epoch_start = (step // self.layout.epoch_steps) * epoch_length
        codes = []
        for position in range(first, first + rows):
            position = epoch_start + (position - epoch_start) % epoch_length
            codes.append(self._domain_code[self.sampler.drawn_domains(position, position + 1)[0]])
        return codes

    def end_step(self, step: int) -> PlayedRound | None:
        """Add the finished step's losses (summed over processes) to the round; play the round when it is due."""
        accelerator = self.trainer.accelerator
        step_totals = self._losses.finish_step(
            lambda totals: accelerator.reduce(totals, reduction="sum"), accelerator.device
        )
        self._round_totals = [
            [before + added for before, added in zip(round_values, step_values)]
            for round_values, step_values in zip(self._round_totals, step_totals)
        ]
        if step % self.update_steps != 0:
            return None
        domains = self.sampler.domains
        sums, counts = self._round_totals
        rewards = {domain: sums[code] / counts[code] for code, domain in enumerate(domains) if counts[code] > 0}
        window = (
            draw_position_of_step(max(step - self.update_steps, 0), *self.layout),
            draw_position_of_step(step, *self.layout),
        )
        drawn_with = self.sampler.weights_at(max(window[1] - 1, 0))
        result = odm_update(drawn_with, rewards, self.bandit, self.smoothing)
        self.bandit = result.state
        self._round_totals = self._empty_totals()
        return PlayedRound(result, dict(zip(domains, counts)), drawn_with, window)

    def remove(self) -> None:
        """Stop observing the model."""
        self._losses.remove()
