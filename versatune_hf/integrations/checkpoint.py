"""What a checkpoint holds of a VersaTune run, read back with its version, its damage and its differences."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from transformers import TrainerState

from ..config import VersaTuneConfig

RUN_STATE_VERSION = 2
"""1: versatune_hf 0.1.0 kept the sampler, the losses and the odm bandit at the top of the callback's attributes.
2: one `run_state` with the step layout, the update bookkeeping and the history's record count and file."""

STRUCTURE_ERRORS = (KeyError, TypeError, AttributeError, IndexError)
"""What reading a damaged (hand-edited, truncated, foreign) state raises; reported as damage, naming the file."""


@dataclass
class SavedRun:
    """A callback entry of `trainer_state.json`: the config it ran with and the run's state."""

    config: dict[str, Any] | None
    run: dict[str, Any]


def read_saved_run(state: TrainerState, name: str, output_dir: str) -> SavedRun | None:
    """The run state `name` saved in the checkpoint being resumed, upgraded to the current layout; `None` if the
    checkpoint has no entry for it."""
    entry = state.stateful_callbacks.get(name)
    if entry is None:
        return None
    if isinstance(entry, list):  # transformers stores several instances of one callback class as a list
        entry = entry[-1]
    try:
        attributes = entry["attributes"]
        run = attributes["run_state"] if "run_state" in attributes else _upgrade_version_1(attributes, state)
        if run is None:
            return None
        if int(run["version"]) > RUN_STATE_VERSION:
            raise ValueError(
                f"The VersaTune state saved at step {state.global_step} has version {run['version']}, newer than "
                f"this versatune_hf understands ({RUN_STATE_VERSION}); upgrade versatune_hf to resume from it."
            )
        return SavedRun((entry.get("args") or {}).get("config"), run)
    except STRUCTURE_ERRORS as error:
        raise damaged_state_error(state.global_step, name, output_dir, error) from error


def damaged_state_error(step: int, name: str, output_dir: str, error: Exception) -> ValueError:
    """The error for a saved state that cannot be read: what, where, and the two ways on."""
    return ValueError(
        f"The VersaTune state saved at step {step} is damaged ({error!r}). It is the entry "
        f"stateful_callbacks → {name} of trainer_state.json in the checkpoint being resumed (usually "
        f"{os.path.join(output_dir, f'checkpoint-{step}')}). Resume from an earlier checkpoint, or delete that entry "
        f"to restart the mixture at step {step}."
    )


def check_trainer_state_file(checkpoint: str) -> None:
    """Raise an error naming the file when a checkpoint's `trainer_state.json` is not readable JSON (the Trainer's
    own error, a bare `JSONDecodeError`, names none)."""
    path = os.path.join(checkpoint, "trainer_state.json")
    if not os.path.isfile(path):
        return
    try:
        with open(path, encoding="utf-8") as handle:
            json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(
            f"{path} is damaged ({error}), so training cannot resume from {checkpoint}. Resume from an earlier "
            "checkpoint."
        ) from error


def config_changes(saved: dict[str, Any] | None, config: VersaTuneConfig) -> list[str]:
    """`"field: old -> new"` for every option that differs from the checkpoint's."""
    if not saved:
        return []
    now = config.to_dict()
    return [
        f"{name}: {saved[name]!r} -> {now[name]!r}"
        for name in now
        if name != "config_version" and name in saved and saved[name] != now[name]
    ]


def _upgrade_version_1(attributes: dict[str, Any], state: TrainerState) -> dict[str, Any]:
    """The version-1 attributes as a version-2 run state. What version 1 did not keep is taken from the checkpoint's
    step: updates up to it are done, and the draws counted for the next update's history record start there."""
    odm = attributes.get("odm")
    driver = (
        {"kind": "train_loss", **odm}
        if odm is not None
        else {
            "kind": "eval_loss",
            "previous_losses": attributes["previous_losses"],
            "reference_losses": attributes["reference_losses"],
        }
    )
    return {
        "version": 1,
        "sampler": attributes["sampler"],
        "layout": None,
        "last_update_step": state.global_step,
        "window": None,
        "driver": driver,
        "history": None,
    }
