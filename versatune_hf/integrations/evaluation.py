"""The eval-loss driven strategies (`versatune`, `expansion`, the static ones, DoReMi, DBL): at each of the Trainer's
scheduled evaluations, collect `eval_<domain>_loss` of every domain, then compute the new weights."""

from __future__ import annotations

import math
from typing import Any

from transformers import Trainer, TrainingArguments

from ..config import VersaTuneConfig
from ..mixing import STRATEGIES, WeightUpdate, check_reference_coverage, compute_update
from ..utils.logs import get_logger
from .reference import measure_reference_losses
from .update import MixtureUpdate, finite_or_none, named_metrics

logger = get_logger(__name__)

EQUAL_POTENTIAL_TOLERANCE = 1e-3
STRATEGIES_SCORED_BY_POTENTIAL = ("versatune", "expansion")


class EvalLossUpdates:
    """Turns the per-domain eval losses of each scheduled evaluation into new weights.

    The Trainer evaluates a dict `eval_dataset` one set at a time and reports `eval_<domain>_loss` in separate
    `on_evaluate` events; `collect` gathers them until every domain has one. Its memory (the previous losses for φ
    and the reference losses for γ) is part of the checkpoint.
    """

    kind = "eval_loss"
    buffered_history = False
    logs_with_training_logs = False

    def __init__(self, config: VersaTuneConfig, domains: list[str]) -> None:
        self.config = config
        self.domains = domains
        self.previous_losses: dict[str, float] = {}
        self.reference_losses: dict[str, float] | None = config.reference_losses
        self._pending: dict[str, float] = {}
        self._pending_step: int | None = None
        self._warned: set[str] = set()

    # ------------------------------------------------------------------ train start

    def check(self, trainer: Trainer | None, args: TrainingArguments) -> None:
        """Stop at train start if the evaluations can never give every domain a loss; warn where they give none."""
        if str(getattr(args.eval_strategy, "value", args.eval_strategy)) == "no" and not args.eval_on_start:
            logger.warning(
                "Evaluation is disabled (eval_strategy='no'), so VersaTune never sees eval losses and the mixture "
                "stays at its initial weights. Set eval_strategy='steps' and eval_steps=N to reweight."
            )
        if trainer is None or trainer.eval_dataset is None:
            return
        if not isinstance(trainer.eval_dataset, dict):
            column = self.config.domain_column
            packed = (
                " (TRL's packing=True drops it: use VersaTuneSFTTrainer.)" if getattr(args, "packing", False) else ""
            )
            raise ValueError(
                f"VersaTune needs one eval set per domain, and the eval set has no '{column}' column to split it by."
                f"{packed} Give the eval set a '{column}' column (VersaTune splits it by domain), or pass "
                "eval_dataset={domain: dataset, ...} (a dict) so that the Trainer reports eval_<domain>_loss for each."
            )
        missing = sorted(set(self.domains) - set(trainer.eval_dataset))
        if missing:
            raise ValueError(
                f"Train domains {missing} have no eval set, so their eval loss is never known. Add them to "
                f"eval_dataset (its keys are {sorted(trainer.eval_dataset)}; they must be the train domain names)."
            )
        empty = sorted(d for d in self.domains if len(trainer.eval_dataset[d]) == 0)
        if empty:
            raise ValueError(f"The eval sets of domains {empty} are empty; give every domain at least one eval row.")
        extra = sorted(set(trainer.eval_dataset) - set(self.domains))
        if extra:
            logger.warning(f"Eval sets {extra} are not train domains; VersaTune ignores their losses.")

    def prepare_references(self, trainer: Trainer | None) -> None:
        """Measure the reference losses with `reference_model` when asked (a fresh run), then check them."""
        if self.reference_losses is None and self.config.reference_model is not None:
            if trainer is None:
                raise RuntimeError(
                    "reference_model needs the Trainer: pass it to the callback (VersaTuneCallback(trainer=...) or "
                    "callback.attach(trainer))."
                )
            self.reference_losses = measure_reference_losses(self.config.reference_model, trainer, self.domains)
        self.check_references()

    def check_references(self) -> None:
        """Refuse reference losses that cover only some domains where γ is compared across domains; warn otherwise."""
        strategy = STRATEGIES[self.config.strategy]
        if not strategy.uses_reference_losses:
            return
        if not self.reference_losses:
            logger.warning(
                f"No reference losses: strategy {self.config.strategy!r} scores domains by their raw eval loss "
                "instead of the learnable potential γ. Pass reference_losses={domain: loss} or reference_model=<path> "
                "(on a command line: --versatune_reference_losses refs.json or --versatune_reference_model <path>, "
                "through VersaTuneArguments)."
            )
            return
        unknown = sorted(set(self.reference_losses) - set(self.domains))
        if unknown:
            logger.warning(f"reference_losses name domains {unknown} that are not in the train set; ignoring them.")
        check_reference_coverage(self.config.strategy, self.domains, self.reference_losses)
        missing = [name for name in self.domains if name not in self.reference_losses]
        if missing:
            logger.warning(f"No reference loss for domains {missing}: their score falls back to the raw eval loss.")

    # ------------------------------------------------------------------ evaluations

    def collect(self, step: int, metrics: dict[str, float]) -> dict[str, float] | None:
        """Add one `on_evaluate` event's losses; return every domain's loss once all have arrived for `step`."""
        if self._pending_step != step:
            if self._pending:
                missing = sorted(set(self.domains) - set(self._pending))
                logger.warning(
                    f"The evaluation at step {self._pending_step} reported no eval loss for train domains {missing}, "
                    "so it did not update the mixture."
                )
            self._pending, self._pending_step = {}, step
        found = {d: float(metrics[f"eval_{d}_loss"]) for d in self.domains if f"eval_{d}_loss" in metrics}
        if not found and "eval_loss" in metrics and "single_eval_loss" not in self._warned:
            self._warned.add("single_eval_loss")
            logger.warning(
                f"The evaluation at step {step} reported a single eval_loss, not one per domain, so it cannot update "
                "the mixture. Pass eval_dataset={domain: dataset, ...} with the train domains as keys."
            )
        self._pending.update(found)
        if len(self._pending) < len(self.domains):
            return None
        losses, self._pending = self._pending, {}
        return losses

    def update(self, weights: dict[str, float], losses: dict[str, float]) -> MixtureUpdate:
        """The strategy's new weights for `losses`; the losses become the previous losses of the next update."""
        update = compute_update(
            self.config.strategy,
            weights,
            losses,
            self.previous_losses or None,
            self.reference_losses,
            self.config.update_params(),
        )
        self._warn_about(update, losses)
        record = {
            "losses": finite_or_none(losses),
            "previous_losses": {d: self.previous_losses[d] for d in losses if d in self.previous_losses},
            "reference_losses": self.reference_losses,
            "potential": finite_or_none(update.potential),
            "forgetting": finite_or_none(update.forgetting),
            "score": finite_or_none(update.score),
            "held": update.held,
            "diverged": update.diverged,
        }
        self.previous_losses.update({d: loss for d, loss in losses.items() if d not in update.held})
        metrics = {
            **named_metrics("potential", update.potential),
            **named_metrics("forgetting", update.forgetting),
            **named_metrics("score", update.score),
        }
        return MixtureUpdate(update.weights, record, metrics)

    def next_window_start(self, trained_position: int, switch_position: int) -> int:
        """Realised counts cover the draws made with each update's weights: from its switch position on."""
        return switch_position

    def _warn_about(self, update: WeightUpdate, losses: dict[str, float]) -> None:
        not_finite = [d for d in update.held if d not in update.diverged]
        if not_finite:
            logger.warning(
                f"Eval loss is NaN or infinite for domains {not_finite} ({ {d: losses[d] for d in not_finite} }); "
                "their weights are kept unchanged this round."
            )
        if update.diverged:
            jumps = ", ".join(
                f"{d} {losses[d]:.4g} (previous {self.previous_losses[d]:.4g})"
                if d in self.previous_losses
                else f"{d} {losses[d]:.4g}"
                for d in update.diverged
            )
            logger.warning(
                f"Eval loss jumped by more than divergence_factor={self.config.divergence_factor} for domains "
                f"{update.diverged} ({jumps}; a domain without a previous loss is compared with the median of the "
                "domains): training may be diverging (learning rate too high, fp16 overflow) or the evaluation was "
                "bad. Their weights are kept unchanged this round, and the next evaluation is compared with their "
                "last loss before the jump."
            )
        potentials = [value for value in update.potential.values() if value is not None and math.isfinite(value)]
        if (
            self.config.strategy in STRATEGIES_SCORED_BY_POTENTIAL
            and len(potentials) == len(self.domains) > 1
            and max(potentials) - min(potentials) < EQUAL_POTENTIAL_TOLERANCE
            and "equal_potential" not in self._warned
        ):
            self._warned.add("equal_potential")
            logger.warning(
                f"Every domain has nearly the same learnable potential γ ≈ {potentials[0]:.4f}, so the update barely "
                "changes the mixture. Reference losses near 0 (a training loss) give γ ≈ 1 everywhere; reference "
                "losses at or above the eval losses give γ = 0 everywhere. Use the eval loss of a strong model on the "
                "same eval sets, measured the same way (reference_model= does this)."
            )

    # ------------------------------------------------------------------ checkpoint

    def state_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "previous_losses": dict(self.previous_losses),
            "reference_losses": self.reference_losses,
        }

    def load_state_dict(self, state: dict[str, Any], keep_reference_losses: bool) -> None:
        """Restore the memory; `keep_reference_losses=True` keeps the ones configured now (the user changed them)."""
        self.previous_losses = {name: float(loss) for name, loss in state["previous_losses"].items()}
        if not keep_reference_losses:
            self.reference_losses = state["reference_losses"]
