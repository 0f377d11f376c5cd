"""Callback pieces that need no training run: step/draw arithmetic, switch delay, options and state."""

import pytest
from transformers import TrainingArguments

from versatune_hf import VersaTuneCallback, VersaTuneConfig
from versatune_hf.integrations.steps import default_switch_delay, draw_position_of_step, steps_per_epoch


def test_steps_per_epoch_matches_trainer_rounding():
    assert steps_per_epoch(10, 1) == 10
    assert steps_per_epoch(10, 4) == 3
    assert steps_per_epoch(12, 4) == 3
    assert steps_per_epoch(1, 8) == 1


def test_draw_position_of_step_counts_global_draws_across_epochs():
    """100 rows, 16 draws per step (e.g. batch 4 × 2 ranks × GA 2): 7 steps per epoch, the last one partial."""
    assert draw_position_of_step(0, 7, 16, 100) == 0
    assert draw_position_of_step(3, 7, 16, 100) == 48
    assert draw_position_of_step(6, 7, 16, 100) == 96
    assert draw_position_of_step(7, 7, 16, 100) == 100
    assert draw_position_of_step(9, 7, 16, 100) == 132


@pytest.mark.parametrize(
    "workers, prefetch, accumulation, expected",
    [(0, None, 1, 3), (0, None, 4, 2), (2, None, 1, 7), (2, 4, 2, 6)],
)
def test_default_switch_delay_covers_look_ahead(tmp_path, workers, prefetch, accumulation, expected):
    args = TrainingArguments(
        output_dir=str(tmp_path),
        dataloader_num_workers=workers,
        dataloader_prefetch_factor=prefetch,
        gradient_accumulation_steps=accumulation,
        use_cpu=True,
    )
    assert default_switch_delay(args) == expected


def test_keyword_options_build_or_override_the_config():
    assert VersaTuneCallback(eta=0.5).config == VersaTuneConfig(eta=0.5)
    base = VersaTuneConfig(strategy="expansion", target_domain="law")
    callback = VersaTuneCallback(config=base, target_max_weight=0.7)
    assert callback.config.target_domain == "law" and callback.config.target_max_weight == 0.7
    with pytest.raises(ValueError, match="target_domain"):
        VersaTuneCallback(strategy="expansion")


def test_state_is_available_before_training():
    """The Trainer calls state() in its constructor, before any sampler exists."""
    state = VersaTuneCallback(strategy="uniform").state()
    assert state["args"]["config"]["strategy"] == "uniform"
    assert state["attributes"]["run_state"] is None


def test_state_rebuilds_the_callback_the_way_the_trainer_does():
    """`restore_callback_states_from_checkpoint=True` builds `type(cb)(**state["args"])`, then sets the attributes."""
    original = VersaTuneCallback(strategy="expansion", target_domain="law", eta=2.0)
    state = original.state()
    rebuilt = type(original)(**state["args"])
    for name, value in state["attributes"].items():
        setattr(rebuilt, name, value)
    assert rebuilt.config == original.config


def test_current_weights_before_training_is_a_clear_error():
    with pytest.raises(RuntimeError, match="train start"):
        VersaTuneCallback().current_weights()
