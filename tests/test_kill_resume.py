"""Nothing lost: SIGKILL a training process mid-run, then check the history file and resume from a checkpoint."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from utils import SUBPROCESS_TIMEOUT

pytestmark = pytest.mark.slow
SCRIPT = os.path.join(os.path.dirname(__file__), "distributed", "toy_training.py")
ARGS = ["--max_steps", "300", "--eval_steps", "10", "--logging_steps", "10"]


def history_lines(output_dir):
    path = os.path.join(output_dir, "versatune_history.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as handle:
        return handle.read().splitlines()


def complete_checkpoints(output_dir):
    """Checkpoints whose trainer_state.json was written (the kill may have cut the newest one short)."""
    steps = [
        int(name.split("-")[1])
        for name in os.listdir(output_dir)
        if name.startswith("checkpoint-") and os.path.exists(os.path.join(output_dir, name, "trainer_state.json"))
    ]
    return sorted(steps)


def test_sigkill_loses_no_history_and_training_resumes(tmp_path):
    process = subprocess.Popen(
        [sys.executable, SCRIPT, str(tmp_path), *ARGS], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.time() + 300
        while time.time() < deadline and process.poll() is None:
            if len(history_lines(tmp_path)) >= 4 and len(complete_checkpoints(tmp_path)) >= 2:
                break
            time.sleep(0.05)
        assert process.poll() is None, "training finished (or failed) before it could be killed"
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()

    killed_lines = history_lines(tmp_path)
    records = [json.loads(line) for line in killed_lines]  # every line is complete JSON
    steps = [record["step"] for record in records]
    assert steps == list(range(10, 10 * len(records) + 1, 10))

    last_checkpoint = complete_checkpoints(tmp_path)[-1]
    assert last_checkpoint < 300
    subprocess.run(
        [
            sys.executable,
            SCRIPT,
            str(tmp_path),
            *ARGS,
            "--resume_from_checkpoint",
            str(tmp_path / f"checkpoint-{last_checkpoint}"),
        ],
        check=True,
        capture_output=True,
        timeout=SUBPROCESS_TIMEOUT,
    )
    resumed = [json.loads(line) for line in history_lines(tmp_path)]
    assert [record["step"] for record in resumed] == list(range(10, 301, 10))
    kept = [record for record in records if record["step"] <= last_checkpoint]
    assert resumed[: len(kept)] == kept
