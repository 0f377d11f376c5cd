"""`VersaTuneCallback`: reweights the train mixture of a `Trainer`/`SFTTrainer` from per-domain eval losses."""

from __future__ import annotations

import dataclasses
import inspect
import weakref
from typing import Any

import datasets
from transformers import Trainer, TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.trainer_callback import ExportableState

from ..config import VersaTuneConfig
from ..sampling import WeightedDomainSampler, WeightedDomainStream
from ..utils.logs import get_logger
from .eval_sets import OVERALL_LOSS_KEY, OverallEvalLoss, split_by_domain
from .labels import has_column, packing_error
from .run import MixtureRun

logger = get_logger(__name__)


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


class VersaTuneCallback(TrainerCallback, ExportableState):
    r"""
    Drives a [`WeightedDomainSampler`] from a `Trainer` or TRL `SFTTrainer`: VersaTune's dynamic domain mixture.

    At train start it replaces the train DataLoader's sampler with a `WeightedDomainSampler` over the rows' domains
    (or adopts the `WeightedDomainStream` given as `train_dataset`). At each of the Trainer's scheduled evaluations it
    collects `eval_{domain}_loss` of all domains, computes new weights with the configured strategy, schedules them on
    the sampler at a draw position every rank computes identically, logs `versatune/weight/<domain>`,
    `versatune/potential/<domain>` and `versatune/forgetting/<domain>` through `Trainer.log`, and appends a record to
    `versatune_history.jsonl` in `output_dir`. Its state is saved in every checkpoint and restored on resume.

    The callback only routes the Trainer's events: each `train()` call gets a new [`MixtureRun`], which holds
    everything about that run (`callback.run`).

    Requirements: one eval set per train domain, and evaluation enabled (`eval_strategy="steps"` or `"epoch"`),
    except with `strategy="odm"`. The eval sets are either a dict `eval_dataset={domain: dataset}` or one eval set
    with the domain column (TRL's `sft.py` passes `dataset["test"]`), which the callback splits by domain when the
    trainer is built. Either way an `eval_loss` over all domains (their row-weighted mean) is added to every
    evaluation, so `metric_for_best_model="eval_loss"` and `load_best_model_at_end` keep working.

    Args:
        train_dataset (`datasets.Dataset` or [`WeightedDomainStream`], *optional*):
            The train dataset with its domain column, as given to the trainer. Only needed where the trainer's own
            (prepared) train dataset lost the column, and for a stream.
        config ([`VersaTuneConfig`] or `dict`, *optional*):
            All options at once (a dict is read with `VersaTuneConfig.from_dict`). Keyword arguments override it.
        trainer (`Trainer`, *optional*):
            The trainer this callback serves. Without it the callback finds the trainer on the call stack when the
            Trainer is built or training starts; `attach(trainer)` sets it later.
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

    _instances: weakref.WeakSet[VersaTuneCallback] = weakref.WeakSet()

    def __init__(
        self,
        train_dataset: Any = None,
        config: VersaTuneConfig | dict[str, Any] | None = None,
        trainer: Trainer | None = None,
        **kwargs: Any,
    ) -> None:
        # The Trainer rebuilds callbacks from their saved state as `type(callback)(**state["args"])`, where the config
        # is a dict (restore_callback_states_from_checkpoint=True); such an instance hands over to the original.
        self._rebuilt_from_checkpoint = isinstance(config, dict)
        if isinstance(config, dict):
            config = VersaTuneConfig.from_dict(config)
        if config is None:
            config = VersaTuneConfig(**kwargs)
        elif kwargs:
            config = dataclasses.replace(config, **kwargs)
        self.config = config
        self.train_dataset = train_dataset
        self.trainer = trainer
        self.run: MixtureRun | None = None
        self._overall_eval_loss = OverallEvalLoss()
        self.run_state: dict[str, Any] | None = None
        """The saved state the Trainer sets on a rebuilt instance; the run reads its state from the checkpoint."""
        VersaTuneCallback._instances.add(self)

    def attach(self, trainer: Trainer) -> VersaTuneCallback:
        """Tell the callback which trainer it serves (for `Trainer.log`, the prepared dataset and the model)."""
        self.trainer = trainer
        return self

    # ------------------------------------------------------------------ state (saved in every checkpoint)

    def state(self) -> dict[str, Any]:
        """Checkpoint state: the config as constructor `args`, the run as the `run_state` attribute (JSON only)."""
        return {
            "args": {"config": self.config.to_dict()},
            "attributes": {"run_state": None if self.run is None else self.run.state_dict()},
        }

    # ------------------------------------------------------------------ Trainer events

    def on_init_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        if self.trainer is None:
            self.trainer = find_calling_trainer()
        self._check_packing(args)
        self._split_eval_set()

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, train_dataloader=None, **kwargs
    ):
        if self.trainer is None:
            self.trainer = find_calling_trainer()
            if self.trainer is None:
                logger.warning(
                    "VersaTuneCallback could not find its Trainer: pass it with VersaTuneCallback(trainer=...) or "
                    "callback.attach(trainer). Without it the metrics go only to state.log_history, and the domain "
                    "labels must come from train_dataset=."
                )
        self._split_eval_set()
        if self._rebuilt_from_checkpoint and self._hand_over(args, state, control, train_dataloader, **kwargs):
            return
        if self.run is not None:
            self.run.close()  # a retry without train end between (auto_find_batch_size)
        self.run = MixtureRun.start(
            self.config, self.trainer, args, state, train_dataloader, self.train_dataset, type(self).__name__
        )
        # transformers raises a KeyError at the first save of a resumed run whose checkpoint lacks this entry.
        state.stateful_callbacks.setdefault(type(self).__name__, self.state())

    def on_epoch_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        if self.run is not None:
            self.run.on_epoch_begin()

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        if self.run is not None:
            self.run.on_step_end()

    def on_prediction_step(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        if self.run is not None:
            self.run.on_prediction_step(control.should_evaluate)

    def on_evaluate(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, metrics=None, **kwargs
    ):
        eval_sets = None if self.trainer is None else self.trainer.eval_dataset
        if metrics is not None and isinstance(eval_sets, dict):
            overall = self._overall_eval_loss.add(metrics, eval_sets)
            if overall is not None:
                self.trainer.log({OVERALL_LOSS_KEY: overall})
        if self.run is not None:
            self.run.on_evaluate(metrics)

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, logs=None, **kwargs):
        if self.run is not None:
            self.run.on_log()

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        if self.run is not None:
            self.run.close()

    def _check_packing(self, args: TrainingArguments) -> None:
        """Stop as soon as the trainer is built when TRL packed the train rows together and lost their domains."""
        prepared = None if self.trainer is None else self.trainer.train_dataset
        if (
            getattr(args, "packing", False)
            and isinstance(prepared, datasets.Dataset)
            and not has_column(prepared, self.config.domain_column)
            and not isinstance(self.train_dataset, WeightedDomainStream)
        ):
            raise packing_error(self.config.domain_column)

    # ------------------------------------------------------------------ eval sets

    def _split_eval_set(self) -> None:
        """Give the trainer one eval set per domain when it was handed a single set with the domain column."""
        if self.trainer is None:
            return
        split = split_by_domain(self.trainer.eval_dataset, self.config.domain_column)
        if split is not None:
            self.trainer.eval_dataset = split

    # ------------------------------------------------------------------ accessors

    @property
    def sampler(self) -> WeightedDomainSampler | WeightedDomainStream | None:
        """The current run's sampler (or stream); `None` before training starts."""
        return None if self.run is None else self.run.source

    def current_weights(self) -> dict[str, float]:
        """The latest weights (from their switch position on)."""
        if self.run is None:
            raise RuntimeError("The sampler is created at train start; call this after trainer.train() began.")
        return self.run.source.current_weights

    # ------------------------------------------------------------------ restore_callback_states_from_checkpoint

    def _hand_over(self, args, state, control, train_dataloader, **kwargs) -> bool:
        """Put the callback the user passed back in the place of this Trainer-rebuilt copy, and start it instead.

        The rebuilt copy lacks what is not JSON (the `train_dataset`, the user's own reference to the callback); the
        original, found among the live callbacks attached to the same trainer but no longer in its list, has them.
        """
        handler = None if self.trainer is None else self.trainer.callback_handler
        if handler is None:
            return False
        originals = [
            callback
            for callback in VersaTuneCallback._instances
            if callback is not self and callback.trainer is self.trainer and callback not in handler.callbacks
        ]
        if len(originals) != 1:
            return False
        original = originals[0]
        handler.callbacks[handler.callbacks.index(self)] = original
        original.on_train_begin(args, state, control, train_dataloader=train_dataloader, **kwargs)
        return True
