"""Exact resume: a run resumed from a mid-run checkpoint trains on the same rows and makes the same weight updates
as the uninterrupted run, bit for bit (one process; the 2-process case is in test_distributed.py)."""

import json
import os
import shutil

import pytest

from versatune_hf.demo.tiny import TOY_VOCAB, toy_corpus, train_tiny_tokenizer

from utils import assert_schedule_resumed, train_checkpointed_toy_run

pytestmark = pytest.mark.slow
DOMAINS = sorted(TOY_VOCAB)

CASES = {
    # name: (rows per domain, SFTConfig overrides, checkpoint step to resume from)
    "max_steps": (100, dict(max_steps=40), 20),
    "gradient_accumulation": (
        100,
        dict(max_steps=40, gradient_accumulation_steps=2, per_device_train_batch_size=4),
        20,
    ),
    "dataloader_workers": (100, dict(max_steps=40, dataloader_num_workers=2), 20),
    "resume_in_epoch_1": (50, dict(max_steps=40), 30),
    "num_train_epochs": (50, dict(num_train_epochs=3, max_steps=-1), 30),
}


def history(output_dir):
    with open(os.path.join(output_dir, "versatune_history.jsonl")) as handle:
        return [json.loads(line) for line in handle]


@pytest.mark.parametrize("case", sorted(CASES))
def test_resume_reproduces_rows_and_weights_exactly(tmp_path, case):
    rows_per_domain, overrides, resume_step = CASES[case]
    corpus = toy_corpus({d: rows_per_domain for d in DOMAINS}, unique=True)
    tokenizer = train_tiny_tokenizer(corpus["text"], vocab_size=400)
    full_dir, resumed_dir = tmp_path / "full", tmp_path / "resumed"
    full, full_callback = train_checkpointed_toy_run(full_dir, corpus, tokenizer, overrides)

    # The interrupted run: everything after the resume checkpoint is lost, the history file is left as it was.
    shutil.copytree(full_dir, resumed_dir)
    for name in os.listdir(resumed_dir):
        if name.startswith("checkpoint-") and int(name.split("-")[1]) > resume_step:
            shutil.rmtree(resumed_dir / name)
    resumed, resumed_callback = train_checkpointed_toy_run(
        resumed_dir, corpus, tokenizer, overrides, resume_from=str(resumed_dir / f"checkpoint-{resume_step}")
    )

    assert resumed.state.global_step == full.state.global_step
    assert resumed.trained_rows == [(step, row) for step, row in full.trained_rows if step >= resume_step]
    assert resumed.trained_rows[0][0] == resume_step
    assert history(resumed_dir) == history(full_dir)
    assert [record["step"] for record in history(full_dir)][: full.state.global_step // 10] == list(
        range(10, full.state.global_step + 1, 10)
    )
    assert_schedule_resumed(
        resumed_callback.sampler.schedule,
        full_callback.sampler.schedule,
        resumed_dir / f"checkpoint-{resume_step}",
    )
    assert len(full_callback.sampler.schedule) > 1
    if case in ("resume_in_epoch_1", "num_train_epochs"):
        rows_per_step = full.args.per_device_train_batch_size * full.args.gradient_accumulation_steps
        assert resume_step > len(corpus) / rows_per_step, "the checkpoint must lie in epoch >= 1"
