"""`MixtureRun`: everything one training run (one `train()` call) knows about its mixture, and the one place that
decides which evaluations update it and what a checkpoint holds."""

from __future__ import annotations

import os
from typing import Any

import torch
from torch.utils.data import BatchSampler
from transformers import Trainer, TrainerState, TrainingArguments

from ..config import VersaTuneConfig
from ..mixing import STRATEGIES
from ..sampling import WeightedDomainSampler
from ..utils.logs import get_logger
from .checkpoint import (
    RUN_STATE_VERSION,
    STRUCTURE_ERRORS,
    SavedRun,
    config_changes,
    damaged_state_error,
    read_saved_run,
)
from .evaluation import EvalLossUpdates
from .history import UpdateHistory
from .odm import OnlineDataMixing
from .rows_kept import eval_rows, report_rows_kept, train_rows
from .sources import Source, install_source, sampler_seed
from .steps import StepLayout, default_switch_delay, draws_per_step, steps_per_epoch
from .update import MixtureUpdate, named_metrics

logger = get_logger(__name__)

Driver = EvalLossUpdates | OnlineDataMixing


class MixtureRun:
    r"""
    The mixture of one training run: its row source (sampler or stream), how steps map to draws, the drivers that
    decide new weights, the update history, and the bookkeeping that makes a resume exact.

    A run is built at every train start (`MixtureRun.start`), so nothing leaks from one `train()` call into the next,
    and closed at train end. Two drivers feed it: `EvalLossUpdates` (the eval-loss strategies, at the Trainer's
    scheduled evaluations) and `OnlineDataMixing` (`odm`, from the training losses of every step).

    Which evaluations update the mixture: only those the Trainer runs by its own schedule during training
    (`eval_strategy`, and `eval_on_start` on a fresh run), at most one per step. A resumed run's start evaluation
    repeats the checkpoint's (already applied) one and is ignored, like `trainer.evaluate(...)` calls made by the
    user during or after training.
    """

    def __init__(
        self,
        config: VersaTuneConfig,
        trainer: Trainer | None,
        args: TrainingArguments,
        state: TrainerState,
        source: Source,
        layout: StepLayout,
        driver: Driver,
        history: UpdateHistory,
    ) -> None:
        self.config = config
        self.trainer = trainer
        self.args = args
        self.state = state
        self.source = source
        self.layout = layout
        self.switch_delay = config.switch_delay_steps or default_switch_delay(args)
        self.driver = driver
        self.history = history
        self.last_update_step: int | None = None
        self.active = True
        self._window_start = 0
        self._window_start_counts: list[int] | None = [0] * len(source.domains)
        self._evaluation_step: int | None = None
        self._pending_logs: dict[str, float] = {}
        self._logging = False
        self._said: set[str] = set()

    # ------------------------------------------------------------------ train start

    @classmethod
    def start(
        cls,
        config: VersaTuneConfig,
        trainer: Trainer | None,
        args: TrainingArguments,
        state: TrainerState,
        train_dataloader: Any,
        train_dataset: Any,
        state_name: str,
    ) -> MixtureRun:
        """Build the run at train start: install the source, then resume from the checkpoint's state or start fresh."""
        if train_dataloader is None:
            raise RuntimeError(
                "VersaTuneCallback needs the Trainer's train DataLoader at train start; none was given."
            )
        source = install_source(config, trainer, args, train_dataloader, train_dataset)
        _report_rows_kept(config, trainer, args, source, train_dataset)
        layout = _layout(args, trainer, train_dataloader, source)
        if isinstance(source, WeightedDomainSampler):
            source.replayed_head = layout.draws_per_step
        if STRATEGIES[config.strategy].reward == "train_loss":
            if trainer is None:
                raise RuntimeError(
                    f"strategy={config.strategy!r} needs the Trainer: pass it to the callback "
                    "(VersaTuneCallback(trainer=...) or callback.attach(trainer))."
                )
            driver: Driver = OnlineDataMixing(config, trainer, args, source, layout)
        else:
            driver = EvalLossUpdates(config, source.domains)
        history = UpdateHistory(
            os.path.join(args.output_dir, config.history_file), state.is_world_process_zero, driver.buffered_history
        )
        run = cls(config, trainer, args, state, source, layout, driver, history)
        try:
            run._begin(state_name)
        except BaseException:
            run.close()
            raise
        return run

    def _begin(self, state_name: str) -> None:
        config, state = self.config, self.state
        if config.strategy == "expansion" and config.target_domain not in self.source.domains:
            raise ValueError(
                f"target_domain={config.target_domain!r} is not a train domain; the train domains are "
                f"{self.source.domains} (names are case-sensitive)."
            )
        if isinstance(self.driver, EvalLossUpdates):
            self.driver.check(self.trainer, self.args)
        if state.global_step > 0:
            self._check_data_skip()
            saved = read_saved_run(state, state_name, self.args.output_dir)
            if saved is None:
                self._start_without_saved_state()
            else:
                self._resume(saved, state_name)
        else:
            self.history.start_fresh()
            if isinstance(self.driver, EvalLossUpdates):
                self.driver.prepare_references(self.trainer)
            if self.args.eval_on_start:
                self._evaluation_step = 0
            self._log(named_metrics("weight", self.source.current_weights))
        logger.info(
            f"VersaTune: strategy={config.strategy}, domains={self.source.domains}, "
            f"weights={self.source.current_weights}, new weights apply {self.switch_delay} steps after each "
            + ("bandit round." if isinstance(self.driver, OnlineDataMixing) else "evaluation.")
        )

    def _check_data_skip(self) -> None:
        step = self.state.global_step
        if not self.args.ignore_data_skip:
            return
        if self.layout.epoch_length is not None and step % self.layout.epoch_steps == 0:
            return  # at an epoch boundary nothing is skipped: the resume is exact either way
        raise ValueError(
            f"ignore_data_skip=True: this resume at step {step} would train epoch {self.layout.epoch_of_step(step)} "
            "again from its first batch instead of skipping the batches already trained, while VersaTune's weight "
            "schedule places every update at a draw of the uninterrupted run, so the resumed run would train on "
            "rows drawn with other weights than its history says. Resume without it: for a map-style dataset the "
            "Trainer skips trained batches by replaying only the sampler's indices, without loading any data."
        )

    def _start_without_saved_state(self) -> None:
        step = self.state.global_step
        logger.warning(
            f"The checkpoint at step {step} has no VersaTune state (it was saved without VersaTuneCallback, or the "
            f"entry was removed): the mixture starts here, at step {step}, from its initial weights "
            f"{self.source.current_weights}, and a new update history begins."
        )
        self.history.start_fresh()
        if isinstance(self.driver, EvalLossUpdates):
            self.driver.prepare_references(self.trainer)
        self.source.set_epoch(self.layout.epoch_of_step(step))
        self.last_update_step = step
        self._start_window(self.layout.position_of_step(step))

    def _resume(self, saved: SavedRun, state_name: str) -> None:
        step = self.state.global_step
        run = saved.run
        try:
            self._check_layout(run["layout"], step)
            self.source.load_state_dict(run["sampler"])
            self._say_what_changed(saved, run["sampler"])
            self._restore_driver(run["driver"], saved.config)
            self.last_update_step = run["last_update_step"]
            window = run["window"]
            if window is None:  # a version-1 state: count the next record's draws from the checkpoint's step
                self._start_window(self.layout.position_of_step(step))
            else:
                self._window_start, self._window_start_counts = int(window["start"]), window["counts"]
            history = run["history"]
        except STRUCTURE_ERRORS as error:
            raise damaged_state_error(step, state_name, self.args.output_dir, error) from error
        self.history.resume(step, history)
        if isinstance(self.driver, EvalLossUpdates):
            self.driver.check_references()
        logger.info(f"VersaTune resumed at step {step} with weights {self.source.current_weights}.")

    def _check_layout(self, saved: dict[str, Any] | None, step: int) -> None:
        if saved is None:
            return
        if saved["draws_per_step"] != self.layout.draws_per_step:
            processes = self.trainer.accelerator.num_processes if self.trainer is not None else self.args.world_size
            raise ValueError(
                f"The checkpoint at step {step} was trained with {saved['draws_per_step']} rows per optimizer step, "
                f"now {self.layout.draws_per_step} (per_device_train_batch_size="
                f"{self.layout.draws_per_step // (processes * self.args.gradient_accumulation_steps)} × {processes} "
                f"processes × gradient_accumulation_steps={self.args.gradient_accumulation_steps}). VersaTune's "
                "weight schedule, like the Trainer's data skip, counts rows per step: resume with the checkpoint's "
                "per_device_train_batch_size, number of processes and gradient_accumulation_steps."
            )
        if saved["epoch_steps"] != self.layout.epoch_steps:
            raise ValueError(
                f"The checkpoint at step {step} had {saved['epoch_steps']} optimizer steps per epoch, this run has "
                f"{self.layout.epoch_steps}: the train set or dataloader_drop_last changed. Resume with the same data "
                "and DataLoader settings."
            )

    def _say_what_changed(self, saved: SavedRun, sampler_state: dict[str, Any]) -> None:
        step = self.state.global_step
        changes = config_changes(saved.config, self.config)
        if changes:
            logger.warning(
                f"VersaTune options differ from the checkpoint's at step {step}: {'; '.join(changes)}. The "
                "checkpoint's schedule and memory are kept, so the steps up to it replay exactly; the updates after "
                "it use the new options, so this run will not match an uninterrupted run with the old ones."
            )
        if isinstance(self.source, WeightedDomainSampler):
            asked = sampler_seed(self.config, self.args)
            if asked != sampler_state["seed"]:
                logger.warning(
                    f"The sampler keeps the checkpoint's seed {sampler_state['seed']} (this run asks for {asked}), so "
                    "that the resumed run draws the same rows as the interrupted one."
                )

    def _restore_driver(self, state: dict[str, Any] | None, saved_config: dict[str, Any] | None) -> None:
        if state is None or state.get("kind") != self.driver.kind:
            saved_strategy = (saved_config or {}).get("strategy", "unknown")
            logger.warning(
                f"The checkpoint was written with strategy {saved_strategy!r}; strategy {self.config.strategy!r} "
                "continues from its mixture but starts without that strategy's memory."
            )
            return
        references_changed = (saved_config or {}).get("reference_losses") != self.config.reference_losses
        self.driver.load_state_dict(state, keep_reference_losses=references_changed)

    # ------------------------------------------------------------------ Trainer events

    def on_epoch_begin(self) -> None:
        # set_epoch is not always forwarded to the sampler (e.g. a multi-process resume), so set it from the step.
        self.source.set_epoch(self.layout.epoch_of_step(self.state.global_step))

    def on_step_end(self) -> None:
        step = self.state.global_step
        if isinstance(self.driver, OnlineDataMixing):
            update = self.driver.end_step(step, self.source.current_weights)
            if update is not None:
                self._apply(update)
        self._resolve_window_start()
        self.source.forget_before(min(self._window_start, self.layout.position_of_step(step)))

    def on_prediction_step(self, should_evaluate: bool) -> None:
        """The Trainer's scheduled evaluations run with `control.should_evaluate` set (until the first eval set is
        done); the user's own `trainer.evaluate(...)` calls run without it."""
        if should_evaluate and self.active:
            self._evaluation_step = self.state.global_step

    def on_evaluate(self, metrics: dict[str, float] | None) -> None:
        if not metrics or not isinstance(self.driver, EvalLossUpdates):
            return
        step = self.state.global_step
        if not self.active or self._evaluation_step != step or self.last_update_step == step:
            self._say_once(
                "ignored_evaluation",
                f"VersaTune ignores the evaluation at step {step}: only the Trainer's scheduled evaluations during "
                "training (and eval_on_start of a fresh run) update the mixture, once per step.",
            )
            return
        losses = self.driver.collect(step, metrics)
        if losses is not None:
            self._evaluation_step = None
            self._apply(self.driver.update(self.source.current_weights, losses))

    def on_log(self) -> None:
        # odm's round is logged right after the Trainer's own training log: a `Trainer.log` call from on_step_end
        # would clear `control.should_log` and so drop the Trainer's loss entry of that step.
        if self._pending_logs and not self._logging:
            self._logging = True
            try:
                self._log(self._pending_logs)
            finally:
                self._pending_logs, self._logging = {}, False

    def close(self) -> None:
        """End the run: write the history's waiting records and stop observing the model. The state stays readable
        (for a `trainer.save_state()` after training)."""
        self.active = False
        try:
            self.history.close()
        finally:
            if isinstance(self.driver, OnlineDataMixing):
                self.driver.close()

    # ------------------------------------------------------------------ updates

    def _apply(self, update: MixtureUpdate) -> None:
        """Schedule new weights, record them in the history and log them."""
        step = self.state.global_step
        before = self.source.current_weights
        trained = self.layout.position_of_step(step)
        window = (self._window_start, max(trained, self._window_start))
        counts = self._realised_counts(window) if self.history.is_writer else None
        switch_position = self._schedule(update.weights, step, update.furthest_draw)
        self.history.append(
            {
                "step": step,
                "epoch": self.state.epoch,
                "strategy": self.config.strategy,
                **update.record,
                "weights_before": before,
                "weights_after": update.weights,
                "switch_position": switch_position,
                "realised_window": list(window),
                "realised_counts": counts,
            }
        )
        self.last_update_step = step
        self._start_window(self.driver.next_window_start(trained, switch_position))
        metrics = {**named_metrics("weight", update.weights), **update.metrics}
        if self.driver.logs_with_training_logs:
            self._pending_logs = metrics
        else:
            self._log(metrics)

    def _realised_counts(self, window: tuple[int, int]) -> dict[str, int]:
        """Draws of each domain in `window` (counted by the history's writer: with `dispatch_batches` only process 0
        draws rows)."""
        if window[1] == window[0]:
            return dict.fromkeys(self.source.domains, 0)
        self._resolve_window_start()
        ends = self.source.drawn_counts(window[1])
        return {name: end - start for name, end, start in zip(self.source.domains, ends, self._window_start_counts)}

    def _schedule(self, weights: dict[str, float], step: int, furthest_draw: int | None) -> int:
        """Schedule `weights` `switch_delay` steps after `step`, or later if any process has already drawn that far
        (a packed stream reads far ahead): at the start of the first step after every draw made, on every rank."""
        nominal = self.layout.position_of_step(step + self.switch_delay)
        furthest = self._furthest_draw() if furthest_draw is None else furthest_draw
        position = max(nominal, self.layout.position_of_step(self.layout.first_step_at_or_after(furthest)))
        if position > nominal:
            self._say_once(
                "late_switch",
                f"The DataLoader had already read up to draw {furthest} at step {step}, beyond switch_delay_steps="
                f"{self.switch_delay}; new weights start at draw {position}, the first step after it.",
            )
        self.source.set_weights(weights, position)
        return position

    def _furthest_draw(self) -> int:
        """The furthest draw made by any process (all processes call this at the same update)."""
        position = self.source.position
        accelerator = None if self.trainer is None else self.trainer.accelerator
        if accelerator is None or accelerator.num_processes == 1:
            return position
        gathered = accelerator.gather(torch.tensor([position], dtype=torch.long, device=accelerator.device))
        return int(gathered.max().item())

    def _start_window(self, start: int) -> None:
        self._window_start, self._window_start_counts = start, None
        self._resolve_window_start()

    def _resolve_window_start(self) -> None:
        """Count the draws before the window's start as soon as they are made (a resumed run may not replay them)."""
        if self._window_start_counts is None and self.source.position >= self._window_start:
            self._window_start_counts = self.source.drawn_counts(self._window_start)

    # ------------------------------------------------------------------ logging and state

    def _log(self, logs: dict[str, float]) -> None:
        """Log through `Trainer.log` (log history, console, TensorBoard, W&B); without a trainer, the log history."""
        if self.trainer is not None:
            self.trainer.log(dict(logs))
        else:
            self.state.log_history.append({**logs, "step": self.state.global_step})

    def _say_once(self, key: str, message: str) -> None:
        if key not in self._said:
            self._said.add(key)
            logger.info(message)

    def state_dict(self) -> dict[str, Any]:
        """The run's checkpoint state (JSON). The Trainer asks for it exactly when it writes a checkpoint, so the
        history's waiting records are written first: the checkpoint never counts a record the file lacks."""
        if self.history.is_writer:
            self.history.flush()
        self._resolve_window_start()
        step = self.state.global_step
        return {
            "version": RUN_STATE_VERSION,
            "sampler": self.source.state_dict(
                epoch=self.layout.epoch_of_step(step), position=self.layout.position_of_step(step)
            ),
            "layout": self.layout.describe(),
            "last_update_step": self.last_update_step,
            "window": {"start": self._window_start, "counts": self._window_start_counts},
            "driver": self.driver.state_dict(),
            "history": self.history.state_dict(),
        }


def _report_rows_kept(
    config: VersaTuneConfig, trainer: Trainer | None, args: TrainingArguments, source: Source, train_dataset: Any
) -> None:
    if not isinstance(source, WeightedDomainSampler):
        return  # a stream's rows are prepared as they are read
    prepared = getattr(trainer, "train_dataset", None)
    train = train_rows(train_dataset, prepared, source.domain_sizes, config.domain_column, args)
    eval_sets = getattr(trainer, "eval_dataset", None)
    evaluation = eval_rows(eval_sets, config.domain_column, args) if isinstance(eval_sets, dict) else {}
    report_rows_kept(train, evaluation, args)


def _layout(args: TrainingArguments, trainer: Trainer | None, train_dataloader: Any, source: Source) -> StepLayout:
    accelerator = None if trainer is None else trainer.accelerator
    per_device = _loader_batch_size(train_dataloader) or args.per_device_train_batch_size
    if source.epoch_length is None:  # a stream has no epochs: the Trainer runs one pass of max_steps steps
        epoch_steps = max(args.max_steps, 1)
    else:
        epoch_steps = steps_per_epoch(len(train_dataloader), args.gradient_accumulation_steps)
    return StepLayout(epoch_steps, draws_per_step(args, per_device, accelerator), source.epoch_length)


def _loader_batch_size(train_dataloader: Any) -> int | None:
    """Rows per batch of the loader's innermost `BatchSampler` (what one process reads per micro-batch, or with
    `dispatch_batches` what process 0 reads per process), which follows `auto_find_batch_size`'s retries."""
    batch_sampler = getattr(train_dataloader, "batch_sampler", None)
    while batch_sampler is not None and not isinstance(batch_sampler, BatchSampler):
        batch_sampler = getattr(batch_sampler, "batch_sampler", None)
    return None if batch_sampler is None else batch_sampler.batch_size
