"""Lifecycle edges of a real run: resume near an epoch end, `eval_on_start`, evaluations outside training, repeated
`train()` calls, checkpoints that do not match the run, and the update history under damage. Each test trains a tiny
LLaMA through `SFTTrainer` (one process; the 2-process cases are in test_distributed.py)."""

import json
import os
import shutil

import pytest
from datasets import ClassLabel, Dataset
from transformers import TrainerCallback
from trl import SFTTrainer

from versatune_hf import VersaTuneCallback, VersaTuneSFTTrainer, WeightedDomainStream
from versatune_hf.demo.tiny import TOY_VOCAB, tiny_llama, toy_corpus, toy_eval_sets, train_tiny_tokenizer

from utils import (
    TOY_REFERENCE_LOSSES,
    RecordingSFTTrainer,
    assert_schedule_resumed,
    read_history,
    sft_config,
    train_checkpointed_toy_run,
)

pytestmark = pytest.mark.slow
DOMAINS = sorted(TOY_VOCAB)
SMALL = toy_corpus({d: 20 for d in DOMAINS}, unique=True)  # 60 rows: 15 steps of 4 rows per epoch
LARGE = toy_corpus({d: 100 for d in DOMAINS}, unique=True)  # 300 rows: 38 steps of 8 rows per epoch


@pytest.fixture(scope="module")
def tokenizer():
    return train_tiny_tokenizer(LARGE["text"], vocab_size=400)


def interrupted_copy(full_dir, resumed_dir, resume_step):
    """The output folder of a run killed right after saving `checkpoint-<resume_step>`."""
    shutil.copytree(full_dir, resumed_dir)
    for name in os.listdir(resumed_dir):
        if name.startswith("checkpoint-") and int(name.split("-")[1]) > resume_step:
            shutil.rmtree(resumed_dir / name)
    return str(resumed_dir / f"checkpoint-{resume_step}")


def assert_resume_is_exact(tmp_path, corpus, tokenizer, overrides, resume_step, **options):
    """Train uninterrupted, then resume a copy from `checkpoint-<resume_step>`: same rows, same history."""
    full, full_callback = train_checkpointed_toy_run(tmp_path / "full", corpus, tokenizer, overrides, **options)
    checkpoint = interrupted_copy(tmp_path / "full", tmp_path / "resumed", resume_step)
    resumed, resumed_callback = train_checkpointed_toy_run(
        tmp_path / "resumed", corpus, tokenizer, overrides, resume_from=checkpoint, **options
    )
    assert resumed.trained_rows == [(step, row) for step, row in full.trained_rows if step >= resume_step]
    assert read_history(tmp_path / "resumed") == read_history(tmp_path / "full")
    assert_schedule_resumed(resumed_callback.sampler.schedule, full_callback.sampler.schedule, checkpoint)
    return full, read_history(tmp_path / "full")


# ---------------------------------------------------------------------------------------------- resume, epoch ends

EPOCH_END_CASES = {
    # 60 rows, 15 optimizer steps per epoch; the DataLoader has read into epoch 1 when step 14 is saved.
    "no_workers": dict(per_device_train_batch_size=4),
    "two_workers": dict(per_device_train_batch_size=4, dataloader_num_workers=2),
    "gradient_accumulation": dict(per_device_train_batch_size=2, gradient_accumulation_steps=2),
}


@pytest.mark.parametrize("case", sorted(EPOCH_END_CASES))
def test_resume_from_the_last_steps_of_an_epoch(tmp_path, tokenizer, case):
    overrides = dict(EPOCH_END_CASES[case], max_steps=30, save_steps=14)
    full, history = assert_resume_is_exact(tmp_path, SMALL, tokenizer, overrides, resume_step=14)
    assert [record["step"] for record in history] == [10, 20, 30]


def test_a_mid_epoch_checkpoint_leaves_out_the_draws_the_trainer_skips(tmp_path, tokenizer):
    """An update every 2 steps; the checkpoint at step 20 (draw 160 of epoch 0) keeps only the schedule entries in
    force over the epoch's first step (which accelerate may pad with) and from draw 160 on, and the resume through
    the Trainer's `skip_first_batches` is still exact."""
    overrides = dict(max_steps=30, eval_steps=2)
    full, history = assert_resume_is_exact(tmp_path, LARGE, tokenizer, overrides, resume_step=20)
    with open(tmp_path / "full" / "checkpoint-20" / "trainer_state.json") as file:
        saved = json.load(file)["stateful_callbacks"]["VersaTuneCallback"]["attributes"]["run_state"]["sampler"]
    assert saved["resume"]["skipped"] == [8, 160]
    switches_before = [record["switch_position"] for record in history if record["switch_position"] <= 160]
    assert len(switches_before) >= 8
    assert len(saved["schedule"]) <= 4, "the head's entry, the one in force at draw 160 and the pending ones"


def test_realised_counts_of_a_window_that_starts_before_the_resumed_epoch(tmp_path, tokenizer):
    """The update at step 20 counts the draws since the switch at step 13 (epoch 0); the run resumes at step 16,
    in epoch 1, and must still count the epoch-0 part of that window."""
    overrides = dict(per_device_train_batch_size=4, max_steps=30, save_steps=8)
    _, history = assert_resume_is_exact(tmp_path, SMALL, tokenizer, overrides, resume_step=16)
    window = history[1]["realised_window"]
    assert window[0] < 60 < window[1], "the window spans the epoch boundary"
    assert sum(history[1]["realised_counts"].values()) == window[1] - window[0]


def test_epoch_evaluations_update_and_resume_like_the_papers_setup(tmp_path, tokenizer):
    """The recipes' default: evaluate and save at every epoch end (the Trainer evaluates after on_epoch_end)."""
    overrides = dict(
        per_device_train_batch_size=4, max_steps=-1, num_train_epochs=3, eval_strategy="epoch", save_strategy="epoch"
    )
    _, history = assert_resume_is_exact(tmp_path, SMALL, tokenizer, overrides, resume_step=15)
    assert [record["step"] for record in history] == [15, 30, 45]


def test_eval_on_start_resume_applies_each_update_once(tmp_path, tokenizer):
    overrides = dict(max_steps=40, eval_on_start=True)
    _, history = assert_resume_is_exact(tmp_path, LARGE, tokenizer, overrides, resume_step=20)
    assert [record["step"] for record in history] == [0, 10, 20, 30, 40]


def test_restore_callback_states_from_checkpoint(tmp_path, tokenizer):
    """The Trainer rebuilds the callback from its saved `args`; the user's own callback object keeps working."""
    overrides = dict(max_steps=30, restore_callback_states_from_checkpoint=True)
    assert_resume_is_exact(tmp_path, LARGE, tokenizer, overrides, resume_step=10)


def test_ignore_data_skip_is_refused_mid_epoch(tmp_path, tokenizer):
    train_checkpointed_toy_run(tmp_path / "full", LARGE, tokenizer, dict(max_steps=30))
    checkpoint = interrupted_copy(tmp_path / "full", tmp_path / "resumed", 20)
    with pytest.raises(ValueError, match=r"ignore_data_skip=True.*Resume without it"):
        train_checkpointed_toy_run(
            tmp_path / "resumed", LARGE, tokenizer, dict(max_steps=30, ignore_data_skip=True), resume_from=checkpoint
        )


def test_ignore_data_skip_at_an_epoch_boundary_is_exact(tmp_path, tokenizer):
    """At an epoch boundary nothing is skipped, so `ignore_data_skip` changes nothing and is accepted."""
    overrides = dict(per_device_train_batch_size=4, max_steps=30, ignore_data_skip=True)
    assert_resume_is_exact(tmp_path, SMALL, tokenizer, {**overrides, "save_steps": 15}, resume_step=15)


# ------------------------------------------------------------------------------ checkpoints that differ from the run


def edit_trainer_state(checkpoint, edit):
    path = os.path.join(checkpoint, "trainer_state.json")
    with open(path) as handle:
        state = json.load(handle)
    edit(state)
    with open(path, "w") as handle:
        json.dump(state, handle)


def test_checkpoint_without_versatune_state_warns_and_starts_the_mixture_there(
    tmp_path, tokenizer, versatune_messages
):
    train_checkpointed_toy_run(tmp_path / "full", LARGE, tokenizer, dict(max_steps=50))
    checkpoint = interrupted_copy(tmp_path / "full", tmp_path / "resumed", 40)
    edit_trainer_state(checkpoint, lambda state: state["stateful_callbacks"].pop("VersaTuneCallback"))
    trainer, callback = train_checkpointed_toy_run(
        tmp_path / "resumed", LARGE, tokenizer, dict(max_steps=50), resume_from=checkpoint
    )
    assert "has no VersaTune state" in versatune_messages()
    assert trainer.state.global_step == 50
    # The mixture starts at step 40 (epoch 1) from the initial weights: the sampler is in epoch 1, not epoch 0.
    assert callback.sampler.epoch == 1
    assert [record["step"] for record in read_history(tmp_path / "resumed")] == [50]


def without_draw_counts(records):
    return [{k: v for k, v in record.items() if k not in ("realised_window", "realised_counts")} for record in records]


def test_checkpoint_of_the_previous_state_layout_resumes(tmp_path, tokenizer):
    """A checkpoint written by versatune_hf 0.1.0 (state version 1: the sampler and the losses at the top of the
    attributes) resumes with the same rows and weights; only the next record's draw counts start at the checkpoint."""
    full, _ = train_checkpointed_toy_run(tmp_path / "full", LARGE, tokenizer, dict(max_steps=40))
    checkpoint = interrupted_copy(tmp_path / "full", tmp_path / "resumed", 20)

    def as_version_1(state):
        entry = state["stateful_callbacks"]["VersaTuneCallback"]
        run = entry["attributes"]["run_state"]
        entry["attributes"] = {
            "sampler": run["sampler"],
            "previous_losses": run["driver"]["previous_losses"],
            "reference_losses": run["driver"]["reference_losses"],
            "last_switch_position": run["sampler"]["schedule"][-1][0],
            "odm": None,
        }

    edit_trainer_state(checkpoint, as_version_1)
    resumed, _ = train_checkpointed_toy_run(
        tmp_path / "resumed", LARGE, tokenizer, dict(max_steps=40), resume_from=checkpoint
    )
    assert resumed.trained_rows == [(step, row) for step, row in full.trained_rows if step >= 20]
    assert without_draw_counts(read_history(tmp_path / "resumed")) == without_draw_counts(
        read_history(tmp_path / "full")
    )


def test_changed_options_on_resume_are_named(tmp_path, tokenizer, versatune_messages):
    train_checkpointed_toy_run(tmp_path / "full", LARGE, tokenizer, dict(max_steps=30))
    checkpoint = interrupted_copy(tmp_path / "full", tmp_path / "resumed", 20)
    train_checkpointed_toy_run(
        tmp_path / "resumed", LARGE, tokenizer, dict(max_steps=30), resume_from=checkpoint, eta=2.0, seed=7
    )
    assert "eta: 5.0 -> 2.0" in versatune_messages()
    assert "keeps the checkpoint's seed 0" in versatune_messages()


def test_batch_size_change_on_resume_names_the_batch_size(tmp_path, tokenizer):
    train_checkpointed_toy_run(tmp_path / "full", LARGE, tokenizer, dict(max_steps=30))
    checkpoint = interrupted_copy(tmp_path / "full", tmp_path / "resumed", 20)
    with pytest.raises(ValueError, match=r"8 rows per optimizer step.*now 16.*per_device_train_batch_size"):
        train_checkpointed_toy_run(
            tmp_path / "resumed",
            LARGE,
            tokenizer,
            dict(max_steps=30, per_device_train_batch_size=16),
            resume_from=checkpoint,
        )


def test_damaged_versatune_state_names_the_checkpoint(tmp_path, tokenizer):
    train_checkpointed_toy_run(tmp_path / "full", LARGE, tokenizer, dict(max_steps=30))
    checkpoint = interrupted_copy(tmp_path / "full", tmp_path / "resumed", 20)

    def damage(state):
        state["stateful_callbacks"]["VersaTuneCallback"]["attributes"] = {"run_state": {"version": 2, "sampler": []}}

    edit_trainer_state(checkpoint, damage)
    with pytest.raises(ValueError, match=r"VersaTune state saved at step 20 is damaged.*checkpoint-20"):
        train_checkpointed_toy_run(tmp_path / "resumed", LARGE, tokenizer, dict(max_steps=30), resume_from=checkpoint)


def test_damaged_trainer_state_file_is_named_by_versatune_sft_trainer(tmp_path, tokenizer):
    train_checkpointed_toy_run(tmp_path / "full", LARGE, tokenizer, dict(max_steps=20))
    checkpoint = interrupted_copy(tmp_path / "full", tmp_path / "resumed", 10)
    with open(os.path.join(checkpoint, "trainer_state.json"), "w") as handle:
        handle.write('{"global_step": 10, "log_hi')
    with pytest.raises(ValueError, match=r"checkpoint-10/trainer_state.json is damaged"):
        train_checkpointed_toy_run(
            tmp_path / "resumed", LARGE, tokenizer, {}, resume_from=checkpoint, trainer_class=VersaTuneSFTTrainer
        )


# ------------------------------------------------------------------------------------------- the update history


def test_damaged_history_line_is_reported_and_no_record_is_dropped(tmp_path, tokenizer, versatune_messages):
    train_checkpointed_toy_run(tmp_path / "full", LARGE, tokenizer, dict(max_steps=40))
    full = read_history(tmp_path / "full")
    checkpoint = interrupted_copy(tmp_path / "full", tmp_path / "resumed", 30)
    path = tmp_path / "resumed" / "versatune_history.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text(lines[0] + '{"step": 15, "trunc\n' + "".join(lines[1:]))
    train_checkpointed_toy_run(tmp_path / "resumed", LARGE, tokenizer, dict(max_steps=40), resume_from=checkpoint)
    assert read_history(tmp_path / "resumed") == full
    assert "line 2" in versatune_messages() and "damaged" in versatune_messages()
    assert (tmp_path / "resumed" / "versatune_history.jsonl.damaged").read_text().count("\n") == len(full) + 1


def test_resume_into_another_output_dir_keeps_the_earlier_records(tmp_path, tokenizer):
    train_checkpointed_toy_run(tmp_path / "full", LARGE, tokenizer, dict(max_steps=30))
    checkpoint = interrupted_copy(tmp_path / "full", tmp_path / "first", 20)
    train_checkpointed_toy_run(tmp_path / "second", LARGE, tokenizer, dict(max_steps=30), resume_from=checkpoint)
    assert read_history(tmp_path / "second") == read_history(tmp_path / "full")


def test_a_new_run_in_the_same_output_dir_keeps_the_previous_history(tmp_path, tokenizer, versatune_messages):
    train_checkpointed_toy_run(tmp_path, LARGE, tokenizer, dict(max_steps=20))
    first = read_history(tmp_path)
    train_checkpointed_toy_run(tmp_path, LARGE, tokenizer, dict(max_steps=10))
    assert [record["step"] for record in read_history(tmp_path)] == [10]
    with open(tmp_path / "versatune_history.1.jsonl") as handle:
        assert [json.loads(line) for line in handle] == first
    assert "versatune_history.1.jsonl" in versatune_messages()


# ------------------------------------------------------------------------------------ evaluations outside training


class EvaluateAt(TrainerCallback):
    """Calls `trainer.evaluate(...)` from `on_step_end` at one step, as a user's own callback might."""

    def __init__(self, step, **evaluate_kwargs):
        self.step, self.evaluate_kwargs, self.trainer = step, evaluate_kwargs, None

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            self.trainer.evaluate(**self.evaluate_kwargs)


def build(tmp_path, tokenizer, callbacks, train=LARGE, trainer_class=RecordingSFTTrainer, **overrides):
    return trainer_class(
        model=tiny_llama(tokenizer),
        args=sft_config(tmp_path, **{"max_steps": 20, **overrides}),
        train_dataset=train,
        eval_dataset=toy_eval_sets(DOMAINS),
        processing_class=tokenizer,
        callbacks=callbacks,
    )


@pytest.mark.parametrize("evaluate_kwargs", [{}, {"eval_dataset": toy_eval_sets(["law"])["law"]}])
def test_evaluations_outside_the_schedule_do_not_update(tmp_path, tokenizer, evaluate_kwargs):
    user_callback = EvaluateAt(5, **evaluate_kwargs)
    callback = VersaTuneCallback(reference_losses=TOY_REFERENCE_LOSSES, eta=5.0)
    trainer = build(tmp_path, tokenizer, [callback, user_callback])
    user_callback.trainer = trainer
    trainer.train()
    history = read_history(tmp_path)
    schedule = callback.sampler.schedule
    assert [record["step"] for record in history] == [10, 20]
    trainer.evaluate(**evaluate_kwargs)
    assert read_history(tmp_path) == history
    assert callback.sampler.schedule == schedule


def test_second_train_call_starts_a_new_run(tmp_path, tokenizer):
    callback = VersaTuneCallback(reference_losses=TOY_REFERENCE_LOSSES, eta=5.0)
    trainer = build(tmp_path, tokenizer, [callback])
    trainer.train()
    first = read_history(tmp_path)
    trainer.train()
    second = read_history(tmp_path)
    assert [record["step"] for record in second] == [10, 20]
    assert second[0]["previous_losses"] == {}, "no losses leak from the first run"
    assert second[0]["weights_before"] == pytest.approx(dict.fromkeys(DOMAINS, 1 / 3))
    assert second[0]["realised_window"][0] == 0
    with open(tmp_path / "versatune_history.1.jsonl") as handle:
        assert [json.loads(line) for line in handle] == first


def test_second_train_call_with_odm_observes_the_model_once(tmp_path, tokenizer):
    callback = VersaTuneCallback(strategy="odm")
    trainer = build(tmp_path, tokenizer, [callback], max_steps=5, eval_strategy="no", logging_steps=1)
    trainer.train()
    trainer.train()
    history = read_history(tmp_path)
    assert [record["step"] for record in history] == [1, 2, 3, 4, 5]
    assert len(trainer.model._forward_hooks) == 0, "the hook is removed at train end"


class OutOfMemoryOnce(TrainerCallback):
    """Raises the CUDA out-of-memory error once, at step 3, so `auto_find_batch_size` retries with a smaller batch."""

    raised = False

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == 3 and not self.raised:
            self.raised = True
            raise RuntimeError("CUDA out of memory.")


@pytest.mark.parametrize("strategy", ["versatune", "odm"])
def test_auto_find_batch_size_retry_starts_a_new_run(tmp_path, tokenizer, strategy):
    callback = VersaTuneCallback(strategy=strategy, reference_losses=TOY_REFERENCE_LOSSES)
    trainer = build(tmp_path, tokenizer, [callback, OutOfMemoryOnce()], auto_find_batch_size=True, logging_steps=1)
    trainer.train()
    batch = trainer._train_batch_size
    assert batch < 8, "the retry used a smaller batch"
    history = read_history(tmp_path)
    if strategy == "odm":
        assert [record["step"] for record in history] == list(range(1, 21))
        assert sum(history[0]["reward_tokens"].values()) > 0
    else:
        assert [record["step"] for record in history] == [10, 20]
        delay = callback.run.switch_delay
        assert history[0]["switch_position"] == (10 + delay) * batch
    assert len(trainer.model._forward_hooks) == 0


# ---------------------------------------------------------------------------------------------- options and data


def test_reference_losses_are_measured_like_the_eval_metric(tmp_path, tokenizer):
    """With the initial model as reference, ℓ_ref equals the eval loss at step 0 exactly, also with DFT's loss."""
    reference_dir = tmp_path / "reference"
    tiny_llama(tokenizer).save_pretrained(reference_dir)
    callback = VersaTuneCallback(reference_model=str(reference_dir))
    build(tmp_path, tokenizer, [callback], max_steps=10, eval_on_start=True, loss_type="dft").train()
    start = read_history(tmp_path)[0]
    assert start["step"] == 0
    assert start["reference_losses"] == pytest.approx(start["losses"], rel=1e-6)


def test_expansion_target_that_is_not_a_train_domain(tmp_path, tokenizer):
    trainer = build(tmp_path, tokenizer, [VersaTuneCallback(strategy="expansion", target_domain="Law")])
    with pytest.raises(ValueError, match=r"target_domain='Law' is not a train domain.*\['code', 'law', 'medicine'\]"):
        trainer.train()


def test_strategy_that_ignores_initial_weights_says_so(tmp_path, tokenizer, versatune_messages):
    callback = VersaTuneCallback(strategy="uniform", initial_weights={"law": 0.5, "code": 0.25, "medicine": 0.25})
    build(tmp_path, tokenizer, [callback], max_steps=10).train()
    assert "strategy='uniform' always starts from uniform weights" in versatune_messages()


def test_data_seed_seeds_the_sampler(tmp_path, tokenizer):
    callback = VersaTuneCallback()
    build(tmp_path, tokenizer, [callback], max_steps=1, data_seed=123, eval_strategy="no").train()
    assert callback.sampler.seed == 123


def test_iterable_dataset_without_a_stream_is_a_clear_error(tmp_path, tokenizer):
    train = LARGE.to_iterable_dataset()
    trainer = build(tmp_path, tokenizer, [VersaTuneCallback()], train=train, trainer_class=SFTTrainer)
    with pytest.raises(ValueError, match=r"IterableDataset.*WeightedDomainStream"):
        trainer.train()


def test_class_label_domains_keep_their_names_when_packed_per_domain(tmp_path, tokenizer):
    train = LARGE.cast_column("domain", ClassLabel(names=DOMAINS))
    callback = VersaTuneCallback(reference_losses=TOY_REFERENCE_LOSSES)
    trainer = build(
        tmp_path, tokenizer, [callback], train=train, trainer_class=VersaTuneSFTTrainer, packing=True, max_steps=10
    )
    trainer.train()
    assert callback.sampler.domains == DOMAINS


def test_stream_with_packing_schedules_past_the_packers_read_ahead(tmp_path, tokenizer):
    """TRL packs a stream 1000 rows at a time: the new weights start after every row already read, not an error."""
    sources = {
        d: Dataset.from_list([{"text": row["text"]} for row in LARGE if row["domain"] == d]).to_iterable_dataset()
        for d in DOMAINS
    }
    stream = WeightedDomainStream(sources, seed=0)
    callback = VersaTuneCallback(train_dataset=stream, reference_losses=TOY_REFERENCE_LOSSES, eta=5.0)
    trainer = build(
        tmp_path, tokenizer, [callback], train=stream.dataset, trainer_class=SFTTrainer, packing=True, max_steps=20
    )
    trainer.train()
    history = read_history(tmp_path)
    assert [record["step"] for record in history] == [10, 20]
    assert history[0]["switch_position"] >= 1000
