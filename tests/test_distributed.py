"""Two processes (gloo on CPU, launched with `accelerate launch`): identical weights on both ranks, the ranks'
batches together are exactly the single global stream, weights switch at the recorded draw with prefetching
workers, and a resumed 2-process run reproduces the uninterrupted one."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from utils import SUBPROCESS_TIMEOUT, assert_schedule_resumed, replay_stream

pytestmark = pytest.mark.slow
SCRIPT = os.path.join(os.path.dirname(__file__), "distributed", "toy_training.py")
LAUNCH = (
    f"{sys.executable} -m accelerate.commands.launch --multi_gpu --num_processes 2 --num_machines 1 "
    "--mixed_precision no --dynamo_backend no --main_process_port 29533"
).split()
# 288 rows = 36 batches of 4 per device × 2 ranks: no epoch-end padding, 9 optimizer steps per epoch with
# gradient accumulation 2, so 30 steps run through three epochs. Two dataloader workers prefetch ahead.
TRAINING = (
    "--rows_per_domain 96 --max_steps 30 --per_device_train_batch_size 4 --gradient_accumulation_steps 2 "
    "--dataloader_num_workers 2"
).split()


def launch(output_dir, *extra):
    result = subprocess.run(
        [*LAUNCH, SCRIPT, str(output_dir), *TRAINING, *extra],
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]


def ranks(output_dir, tag):
    return [json.load(open(os.path.join(output_dir, f"{tag}-rank{rank}.json"))) for rank in (0, 1)]


def assert_two_process_resume_is_exact(full_dir, resumed_dir, step, later_step, *options):
    """Resume a copy of the 2-process run in `full_dir` from `checkpoint-<step>` (its later checkpoint removed): each
    rank trains the same rows, the schedule continues the checkpoint's, the history ends identical. Returns the
    checkpoint."""
    shutil.copytree(full_dir, resumed_dir)
    shutil.rmtree(resumed_dir / f"checkpoint-{later_step}")
    checkpoint = resumed_dir / f"checkpoint-{step}"
    launch(resumed_dir, "--tag", "resumed", "--resume_from_checkpoint", str(checkpoint), *options)
    for full, resumed in zip(ranks(full_dir, "full"), ranks(resumed_dir, "resumed")):
        assert_schedule_resumed(resumed["schedule"], full["schedule"], checkpoint)
        assert resumed["trained_rows"] == [
            [row_step, row] for row_step, row in full["trained_rows"] if row_step >= step
        ]
    with open(full_dir / "versatune_history.jsonl") as full_history:
        with open(resumed_dir / "versatune_history.jsonl") as resumed_history:
            assert resumed_history.read() == full_history.read()
    return checkpoint


def global_stream(rank_outputs):
    """Interleave the ranks' batches the way accelerate deals them: batch i of rank r is global batch 2i + r."""
    batch = rank_outputs[0]["per_device_batch"]
    per_rank = [[row for _, row in output["trained_rows"]] for output in rank_outputs]
    stream = []
    for start in range(0, len(per_rank[0]), batch):
        for rows in per_rank:
            stream += rows[start : start + batch]
    return stream


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("two_process")
    launch(output_dir, "--tag", "full")
    return output_dir


def test_two_ranks_share_weights_and_split_one_global_stream(full_run):
    rank0, rank1 = ranks(full_run, "full")
    assert rank0["world_size"] == 2
    assert rank0["schedule"] == rank1["schedule"]
    assert len(rank0["schedule"]) == 4, "three updates after the initial weights"
    stream = global_stream([rank0, rank1])
    assert len(stream) == 30 * 2 * 4 * 2
    assert stream == replay_stream(rank0["labels"], rank0["schedule"], rank0["seed"], len(stream))
    with open(os.path.join(full_run, "versatune_history.jsonl")) as handle:
        history = [json.loads(line) for line in handle]
    assert [record["switch_position"] for record in history] == [position for position, _ in rank0["schedule"][1:]]


def test_two_process_resume_reproduces_the_run(full_run, tmp_path):
    assert_two_process_resume_is_exact(full_run, tmp_path / "resumed", 20, 30)


def test_two_ranks_play_one_odm_bandit(tmp_path):
    """odm over 2 ranks with gradient accumulation, workers and three epochs: the rewards of each step count the
    label tokens of both ranks' rows of each domain (all-reduced), so both ranks schedule the same weights."""
    launch(tmp_path, "--tag", "odm", "--strategy", "odm")
    rank0, rank1 = ranks(tmp_path, "odm")
    assert rank0["schedule"] == rank1["schedule"] and len(rank0["schedule"]) == 31
    with open(os.path.join(tmp_path, "versatune_history.jsonl")) as handle:
        history = [json.loads(line) for line in handle]
    assert [record["step"] for record in history] == list(range(1, 31))
    for record in history:
        tokens = dict.fromkeys(record["reward_tokens"], 0.0)
        for output in (rank0, rank1):
            for step, row in output["trained_rows"]:
                if step == record["step"] - 1:
                    tokens[output["labels"][row]] += output["row_tokens"][row] - 1
        assert record["reward_tokens"] == tokens
    stream = global_stream([rank0, rank1])
    assert stream == replay_stream(rank0["labels"], rank0["schedule"], rank0["seed"], len(stream))


def test_two_process_resume_from_the_last_steps_of_an_epoch(tmp_path):
    """60 rows, 1 row per device × 2 processes × gradient accumulation 2 = 15 steps per epoch, two prefetching
    workers: when step 14 is saved the loaders have read into epoch 1. The resume replays epoch 0 exactly."""
    options = (
        "--rows_per_domain 20 --max_steps 30 --save_steps 14 --per_device_train_batch_size 1 "
        "--gradient_accumulation_steps 2 --dataloader_num_workers 2"
    ).split()
    launch(tmp_path / "full", "--tag", "full", *options)
    assert_two_process_resume_is_exact(tmp_path / "full", tmp_path / "resumed", 14, 28, *options)


def test_two_process_resume_mid_epoch_before_an_uneven_epoch_end(tmp_path):
    """63 rows, 2 rows per device × 2 processes: the epoch's last batch has one row, and accelerate pads it with the
    epoch's first row. The checkpoint at step 10 leaves out the skipped draws 4-39, but the resumed sampler still
    makes the epoch's first draws for real, so the padded batch trains on the same rows."""
    options = (
        "--rows_per_domain 21 --max_steps 20 --save_steps 10 --per_device_train_batch_size 2 "
        "--gradient_accumulation_steps 1"
    ).split()
    launch(tmp_path / "full", "--tag", "full", *options)
    checkpoint = assert_two_process_resume_is_exact(tmp_path / "full", tmp_path / "resumed", 10, 20, *options)
    with open(checkpoint / "trainer_state.json") as file:
        saved = json.load(file)["stateful_callbacks"]["VersaTuneCallback"]["attributes"]["run_state"]["sampler"]
    assert saved["resume"]["skipped"] == [4, 40]
    full_ranks = ranks(tmp_path / "full", "full")
    last_step_rows = [row for step, row in full_ranks[1]["trained_rows"] if step == 15]
    assert len(last_step_rows) == 2 and last_step_rows[1] == full_ranks[0]["trained_rows"][0][1], "padded"


def test_dispatch_batches_counts_every_process_rows_per_step(tmp_path):
    """With `dispatch_batches=True` process 0 reads the batches of both processes: a step still draws
    4 rows × 2 processes × gradient accumulation 2 = 16, and both ranks schedule the same weights."""
    # accelerate concatenates the processes' batches before dispatching them, so they must have one length.
    launch(tmp_path, "--tag", "dispatch", "--dispatch_batches", "--pad_to_multiple_of", "64")
    rank0, rank1 = ranks(tmp_path, "dispatch")
    assert rank0["schedule"] == rank1["schedule"] and len(rank0["schedule"]) == 4
    with open(os.path.join(tmp_path, "versatune_history.jsonl")) as handle:
        history = [json.loads(line) for line in handle]
    assert [record["switch_position"] - record["step"] * 16 for record in history] == [rank0["switch_delay"] * 16] * 3
    stream = global_stream([rank0, rank1])
    assert stream == replay_stream(rank0["labels"], rank0["schedule"], rank0["seed"], len(stream))
