"""`VersaTuneCallback`: reweights the train mixture of a `Trainer`/`SFTTrainer` from per-domain eval losses."""

from __future__ import annotations

import dataclasses
import inspect
import math
import os
from collections import Counter
from typing import Any

from accelerate.data_loader import get_sampler
from transformers import Trainer, TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.trainer_callback import ExportableState
from transformers.utils import logging

from .config import VersaTuneConfig
from .initial_weights import resolve_initial_weights
from .jsonlines import JsonLinesFile
from .labels import resolve_domain_labels
from .odm import OnlineDataMixing, PlayedRound
from .reference import measure_reference_losses
from .sampler import WeightedDomainSampler
from .steps import StepLayout, default_switch_delay, draw_position_of_step, steps_per_epoch
from .strategies import STRATEGIES, apply_guards, compute_update, initial_weights_for
from .stream import WeightedDomainStream

logger = logging.get_logger(__name__)

LOG_PREFIX = "versatune"
EQUAL_POTENTIAL_TOLERANCE = 1e-3
STRATEGIES_SCORED_BY_POTENTIAL = ("versatune", "expansion")


def find_calling_trainer() -> Trainer | None:
    """The `Trainer` whose event is being handled, found on the call stack (callbacks are not handed the trainer)."""
    frame = inspect.currentframe()
    try:
        while frame is not None:
            candidate = frame.f_locals.get("self")
            if isinstance(candidate, Trainer):
                return candidate
            frame = frame.f_back
        return None
    finally:
        del frame


def _finite_or_none(values: dict[str, float | None]) -> dict[str, float | None]:
    return {name: value if value is not None and math.isfinite(value) else None for name, value in values.items()}


class VersaTuneCallback(TrainerCallback, ExportableState):
    r"""
    Drives a [`WeightedDomainSampler`] from a `Trainer` or TRL `SFTTrainer`: VersaTune's dynamic domain mixture.

    At train start it replaces the train DataLoader's sampler with a `WeightedDomainSampler` over the rows' domains
    (or adopts one the trainer already uses). At every evaluation it collects `eval_{domain}_loss` of all domains,
    computes new weights with the configured strategy, schedules them on the sampler at a draw position every rank
    computes identically, logs `versatune/weight/<domain>`, `versatune/potential/<domain>` and
    `versatune/forgetting/<domain>` through `Trainer.log`, and appends a record to `versatune_history.jsonl` in
    `output_dir`. Its state (sampler schedule, last losses) is saved in every checkpoint and restored on resume.

    Requirements: `eval_dataset` is a dict `{domain: dataset}` with one eval set per train domain, and evaluation is
    enabled (`eval_strategy="steps"` or `"epoch"`).

    Args:
        train_dataset (`datasets.Dataset`, *optional*):
            The train dataset with its domain column, as given to the trainer. Only needed where the trainer's own
            (prepared) train dataset lost the column.
        config ([`VersaTuneConfig`], *optional*):
            All options at once. Keyword arguments override its fields.
        **kwargs:
            Fields of [`VersaTuneConfig`], e.g. `strategy="versatune"`, `eta=1.0`, `initial_weights="detect.json"`,
            `reference_losses={...}`, `min_weight=0.01`, `target_domain="law"`, `seed=0`.

    Example:

    ```python
    trainer = SFTTrainer(
        model=model,
        args=SFTConfig(output_dir="out", eval_strategy="steps", eval_steps=200),
        train_dataset=train_ds,  # has a "domain" column
        eval_dataset={"law": law_eval, "medicine": medicine_eval},
        callbacks=[VersaTuneCallback(train_dataset=train_ds)],
    )
    trainer.train()
    ```
    """

    def __init__(self, train_dataset: Any = None, config: VersaTuneConfig | None = None, **kwargs: Any) -> None:
        if config is None:
            config = VersaTuneConfig(**kwargs)
        elif kwargs:
            config = dataclasses.replace(config, **kwargs)
        self.config = config
        self.train_dataset = train_dataset
        self.sampler: WeightedDomainSampler | None = None
        self.reference_losses: dict[str, float] | None = config.reference_losses
        self.previous_losses: dict[str, float] = {}
        self.last_switch_position = 0
        self._pending: dict[str, float] = {}
        self._pending_step: int | None = None
        self._trainer: Trainer | None = None
        self._history: JsonLinesFile | None = None
        self._layout: StepLayout | None = None
        self._switch_delay = config.switch_delay_steps
        self._warned: set[str] = set()
        self._uses_training_loss = STRATEGIES[config.strategy].reward == "train_loss"
        self._odm: OnlineDataMixing | None = None
        self._round_logs: dict[str, float] = {}
        self._logging_round = False

    # ------------------------------------------------------------------ state (saved in every checkpoint)

    def state(self) -> dict[str, Any]:
        """Checkpoint state: the config as `args`, the sampler and the update memory as `attributes` (JSON only)."""
        return {
            "args": {"config": self.config.to_dict()},
            "attributes": {
                "sampler": None if self.sampler is None else self.sampler.state_dict(),
                "previous_losses": dict(self.previous_losses),
                "reference_losses": self.reference_losses,
                "last_switch_position": self.last_switch_position,
                "odm": None if self._odm is None else self._odm.state_dict(),
            },
        }

    def _restore(self, saved: dict[str, Any]) -> None:
        attributes = saved["attributes"]
        if attributes["sampler"] is not None:
            self.sampler.load_state_dict(attributes["sampler"])
        self.previous_losses = dict(attributes["previous_losses"])
        self.reference_losses = attributes["reference_losses"]
        self.last_switch_position = attributes["last_switch_position"]
        if self._odm is not None and attributes.get("odm") is not None:
            self._odm.load_state_dict(attributes["odm"])

    # ------------------------------------------------------------------ train start

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, train_dataloader=None, **kwargs
    ):
        self._trainer = find_calling_trainer()
        if train_dataloader is None:
            raise RuntimeError(
                "VersaTuneCallback needs the Trainer's train DataLoader at train start; none was given."
            )
        self.sampler = self._install_sampler(args, train_dataloader)
        self._check_evaluation(args)
        draws_per_step = (
            getattr(train_dataloader, "total_batch_size", args.per_device_train_batch_size)
            * args.gradient_accumulation_steps
        )
        if self.sampler.epoch_length is None:
            # A stream has no epochs: the Trainer runs one pass of max_steps steps.
            epoch_steps = max(args.max_steps, 1)
        else:
            epoch_steps = steps_per_epoch(len(train_dataloader), args.gradient_accumulation_steps)
        self._layout = StepLayout(epoch_steps, draws_per_step, self.sampler.epoch_length)
        if self._switch_delay is None:
            self._switch_delay = default_switch_delay(args)
        if self._uses_training_loss:
            self._odm = OnlineDataMixing(
                self._require_trainer(f"strategy={self.config.strategy!r}"),
                args,
                self.sampler,
                self._layout,
                self.config.odm_smoothing,
                self.config.odm_update_steps,
            )
        name = type(self).__name__
        resuming = state.global_step > 0
        if resuming and name in state.stateful_callbacks:
            saved = state.stateful_callbacks[name]
            self._restore(saved[-1] if isinstance(saved, list) else saved)
            logger.info(f"VersaTune resumed at step {state.global_step} with weights {self.sampler.current_weights}.")
        # transformers raises a KeyError at the first save of a resumed run whose checkpoint lacks this entry.
        state.stateful_callbacks.setdefault(name, self.state())
        self._history = JsonLinesFile(os.path.join(args.output_dir, self.config.history_file))
        if state.is_world_process_zero:
            # A fresh run starts an empty history; a resumed one keeps the records up to its checkpoint and drops
            # later ones (training repeats those steps).
            self._history.rewrite([r for r in self._history.read() if 0 < r["step"] <= state.global_step])
        if self.reference_losses is None and self.config.reference_model is not None:
            self.reference_losses = measure_reference_losses(
                self.config.reference_model, self._require_trainer("reference_model"), self.sampler.domains
            )
        self._check_reference_losses()
        if not resuming:
            self._log(state, {f"{LOG_PREFIX}/weight/{d}": w for d, w in self.sampler.current_weights.items()})
        logger.info(
            f"VersaTune: strategy={self.config.strategy}, domains={self.sampler.domains}, "
            f"weights={self.sampler.current_weights}, new weights apply {self._switch_delay} steps after each "
            + ("bandit round." if self._uses_training_loss else "eval.")
        )

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        if self._odm is None:
            return
        played = self._odm.end_step(state.global_step)
        if played is not None:
            self._apply_bandit_round(state, played)

    def _apply_bandit_round(self, state: TrainerState, played: PlayedRound) -> None:
        """Schedule an odm round's weights (after the guards), record it, and keep its metrics for the next log."""
        result = played.result
        before = self.sampler.current_weights
        weights = apply_guards(before, result.weights, self.config.update_params())
        switch_position = draw_position_of_step(state.global_step + self._switch_delay, *self._layout)
        self.sampler.set_weights(weights, switch_position)
        if state.is_world_process_zero:
            self._history.append(
                {
                    "step": state.global_step,
                    "epoch": state.epoch,
                    "strategy": self.config.strategy,
                    "rewards": result.rewards,
                    "reward_tokens": played.reward_tokens,
                    "estimates": result.state.estimates,
                    "exploration": result.exploration,
                    "round": result.state.rounds,
                    "drawn_with": played.drawn_with,
                    "weights_before": before,
                    "weights_after": weights,
                    "switch_position": switch_position,
                    "realised_window": list(played.window),
                    "realised_counts": self.sampler.realised_counts(*played.window),
                }
            )
        self.last_switch_position = switch_position
        self._round_logs = {f"{LOG_PREFIX}/weight/{d}": w for d, w in weights.items()}
        self._round_logs.update({f"{LOG_PREFIX}/reward/{d}": r for d, r in result.rewards.items()})
        self._round_logs.update({f"{LOG_PREFIX}/estimate/{d}": e for d, e in result.state.estimates.items()})

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, logs=None, **kwargs):
        # The latest round is logged right after the Trainer's own training log: a `Trainer.log` call from
        # on_step_end would clear `control.should_log` and so drop the Trainer's loss entry of that step.
        if self._round_logs and not self._logging_round:
            self._logging_round = True
            try:
                self._log(state, self._round_logs)
            finally:
                self._round_logs, self._logging_round = {}, False

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        if self._odm is not None:
            self._odm.remove()  # the bandit state stays, for a `trainer.save_state()` after training

    def on_epoch_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        # set_epoch is not always forwarded to the sampler (e.g. a multi-process resume), so set it from the step.
        self.sampler.set_epoch(state.global_step // self._layout.epoch_steps)

    def _install_sampler(
        self, args: TrainingArguments, train_dataloader: Any
    ) -> WeightedDomainSampler | WeightedDomainStream:
        if isinstance(self.train_dataset, WeightedDomainStream):
            return self._adopt_stream(args, self.train_dataset)
        existing = get_sampler(train_dataloader)
        if isinstance(existing, WeightedDomainSampler):
            return existing
        if getattr(args, "train_sampling_strategy", "random") not in ("random", None):
            logger.warning(
                f"train_sampling_strategy={args.train_sampling_strategy!r} is replaced by VersaTune's "
                "weighted sampler."
            )
        loader_rows = len(train_dataloader.dataset)
        prepared = getattr(self._trainer, "train_dataset", None)
        labels = resolve_domain_labels(self.config.domain_column, loader_rows, prepared, self.train_dataset, args)
        counts = dict(sorted(Counter(labels).items()))
        if len(counts) < 2:
            logger.warning(
                f"The train set has a single domain {list(counts)}: there is no mixture to tune, VersaTune only logs."
            )
        seed = args.seed if self.config.seed is None else self.config.seed
        sampler = WeightedDomainSampler(labels, self._starting_weights(counts), seed=seed, domains=list(counts))
        train_dataloader.set_sampler(sampler)
        return sampler

    def _adopt_stream(self, args: TrainingArguments, stream: WeightedDomainStream) -> WeightedDomainStream:
        if args.dataloader_num_workers > 0:
            raise ValueError(
                "A WeightedDomainStream reads VersaTune's weights in the main process, but dataloader workers would "
                "each iterate a copy that never sees an update. Set dataloader_num_workers=0."
            )
        if self._initial_weights_spec() == "proportional":
            raise ValueError(
                "initial_weights='proportional' needs the number of rows per domain, which a stream does not know. "
                "Pass a {domain: weight} dict (e.g. your datasets' sizes) instead."
            )
        stream.restart(self._starting_weights(dict.fromkeys(stream.domains, 1)))
        return stream

    def _initial_weights_spec(self) -> str | dict[str, float]:
        return STRATEGIES[self.config.strategy].initial_weights or self.config.initial_weights

    def _starting_weights(self, domain_sizes: dict[str, int]) -> dict[str, float]:
        start = resolve_initial_weights(self._initial_weights_spec(), domain_sizes)
        return initial_weights_for(self.config.strategy, start, self.config.update_params())

    def _check_evaluation(self, args: TrainingArguments) -> None:
        if self._uses_training_loss:
            return
        if str(getattr(args.eval_strategy, "value", args.eval_strategy)) == "no":
            logger.warning(
                "Evaluation is disabled (eval_strategy='no'), so VersaTune never sees eval losses and the mixture "
                "stays at its initial weights. Set eval_strategy='steps' and eval_steps=N to reweight."
            )
        trainer = self._trainer
        if trainer is None or trainer.eval_dataset is None:
            return
        if not isinstance(trainer.eval_dataset, dict):
            raise ValueError(
                "VersaTune needs one eval set per domain: pass eval_dataset={domain: dataset, ...} (a dict) so that "
                "the Trainer reports eval_<domain>_loss for each domain."
            )
        missing = sorted(set(self.sampler.domains) - set(trainer.eval_dataset))
        if missing:
            raise ValueError(
                f"Train domains {missing} have no eval set, so their eval loss is never known. Add them to "
                f"eval_dataset (its keys are {sorted(trainer.eval_dataset)}; they must be the train domain names)."
            )
        empty = sorted(d for d in self.sampler.domains if len(trainer.eval_dataset[d]) == 0)
        if empty:
            raise ValueError(f"The eval sets of domains {empty} are empty; give every domain at least one eval row.")
        extra = sorted(set(trainer.eval_dataset) - set(self.sampler.domains))
        if extra:
            logger.warning(f"Eval sets {extra} are not train domains; VersaTune ignores their losses.")

    def _check_reference_losses(self) -> None:
        domains = self.sampler.domains
        if not STRATEGIES[self.config.strategy].uses_reference_losses:
            return
        if not self.reference_losses:
            logger.warning(
                f"No reference losses: strategy {self.config.strategy!r} scores domains by their raw eval loss "
                "instead of the learnable potential γ. Pass reference_losses={domain: loss} or reference_model=<path>."
            )
            return
        unknown = sorted(set(self.reference_losses) - set(domains))
        if unknown:
            logger.warning(f"reference_losses name domains {unknown} that are not in the train set; ignoring them.")
        missing = [name for name in domains if name not in self.reference_losses]
        if missing:
            logger.warning(f"No reference loss for domains {missing}: their score falls back to the raw eval loss.")

    def _require_trainer(self, feature: str) -> Trainer:
        if self._trainer is None:
            raise RuntimeError(
                f"{feature} needs the Trainer, which VersaTuneCallback could not find on the call stack."
            )
        return self._trainer

    # ------------------------------------------------------------------ evaluation -> update

    def on_evaluate(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, metrics=None, **kwargs
    ):
        if self.sampler is None or not metrics or self._uses_training_loss:
            return
        if self._pending_step != state.global_step:
            if self._pending:
                missing = sorted(set(self.sampler.domains) - set(self._pending))
                raise ValueError(
                    f"The evaluation at step {self._pending_step} reported no eval loss for train domains {missing}. "
                    "Add an eval set for each train domain to eval_dataset={domain: dataset}."
                )
            self._pending, self._pending_step = {}, state.global_step
        for domain in self.sampler.domains:
            key = f"eval_{domain}_loss"
            if key in metrics:
                self._pending[domain] = float(metrics[key])
        if "eval_loss" in metrics and not self._pending:
            raise ValueError(
                "The Trainer reported a single eval_loss: VersaTune needs one eval set per domain. Pass "
                "eval_dataset={domain: dataset, ...} with the train domains as keys."
            )
        if len(self._pending) == len(self.sampler.domains):
            losses, self._pending = self._pending, {}
            self._update(args, state, losses)

    def _update(self, args: TrainingArguments, state: TrainerState, losses: dict[str, float]) -> None:
        before = self.sampler.current_weights
        update = compute_update(
            self.config.strategy,
            before,
            losses,
            self.previous_losses or None,
            self.reference_losses,
            self.config.update_params(),
        )
        self._warn_about(update, losses)
        switch_position = draw_position_of_step(state.global_step + self._switch_delay, *self._layout)
        self.sampler.set_weights(update.weights, switch_position)
        trained_until = draw_position_of_step(state.global_step, *self._layout)
        window = [self.last_switch_position, max(trained_until, self.last_switch_position)]
        record = {
            "step": state.global_step,
            "epoch": state.epoch,
            "strategy": self.config.strategy,
            "losses": _finite_or_none(losses),
            "previous_losses": {d: self.previous_losses[d] for d in losses if d in self.previous_losses},
            "reference_losses": self.reference_losses,
            "potential": _finite_or_none(update.potential),
            "forgetting": _finite_or_none(update.forgetting),
            "score": _finite_or_none(update.score),
            "weights_before": before,
            "weights_after": update.weights,
            "held": update.held,
            "switch_position": switch_position,
            "realised_window": window,
            "realised_counts": self.sampler.realised_counts(*window),
        }
        if state.is_world_process_zero:
            self._history.append(record)
        self.previous_losses.update({d: loss for d, loss in losses.items() if math.isfinite(loss)})
        self.last_switch_position = switch_position
        logs = {}
        for kind, values in (
            ("weight", update.weights),
            ("potential", update.potential),
            ("forgetting", update.forgetting),
            ("score", update.score),
        ):
            logs.update(
                {f"{LOG_PREFIX}/{kind}/{d}": v for d, v in values.items() if v is not None and math.isfinite(v)}
            )
        self._log(state, logs)

    def _warn_about(self, update: Any, losses: dict[str, float]) -> None:
        if update.held:
            logger.warning(
                f"Eval loss is NaN or infinite for domains {update.held} ({ {d: losses[d] for d in update.held} }); "
                "their weights are kept unchanged this round."
            )
        potentials = [value for value in update.potential.values() if value is not None and math.isfinite(value)]
        if (
            self.config.strategy in STRATEGIES_SCORED_BY_POTENTIAL
            and len(potentials) == len(self.sampler.domains) > 1
            and max(potentials) - min(potentials) < EQUAL_POTENTIAL_TOLERANCE
            and "equal_potential" not in self._warned
        ):
            self._warned.add("equal_potential")
            logger.warning(
                f"Every domain has nearly the same learnable potential γ ≈ {potentials[0]:.4f}, so the update barely "
                "changes the mixture. Reference losses near 0 (a training loss) cause this: use the eval loss of a "
                "strong model on the same eval sets as reference_losses."
            )

    def _log(self, state: TrainerState, logs: dict[str, float]) -> None:
        """Log through `Trainer.log` (log history, console, TensorBoard, W&B); without a trainer, the log history."""
        if self._trainer is not None:
            self._trainer.log(dict(logs))
        else:
            state.log_history.append({**logs, "step": state.global_step})

    def current_weights(self) -> dict[str, float]:
        """The latest weights (from their switch position on)."""
        if self.sampler is None:
            raise RuntimeError("The sampler is created at train start; call this after trainer.train() began.")
        return self.sampler.current_weights
