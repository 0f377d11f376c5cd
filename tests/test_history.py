"""The update history file: whole lines even when the disk fills, atomic rewrites, damage reported, one run at a time,
and `odm`'s records written at checkpoints rather than at every step."""

import errno
import json
import os

import pytest
from transformers import TrainerCallback

from versatune_hf import VersaTuneCallback
from versatune_hf.demo.tiny import TOY_VOCAB, tiny_llama, toy_corpus
from versatune_hf.integrations import history as history_module
from versatune_hf.integrations.history import UpdateHistory, read_history_file, write_atomically

from utils import RecordingSFTTrainer, read_history, sft_config


def records(steps):
    return [{"step": step, "weights_after": {"a": 0.5, "b": 0.5}} for step in steps]


def lines_of(path):
    with open(path, encoding="utf-8") as handle:
        return handle.read().splitlines()


def test_records_are_appended_whole_and_counted(tmp_path):
    history = UpdateHistory(str(tmp_path / "h.jsonl"), is_writer=True, buffered=False)
    history.start_fresh()
    for record in records([10, 20]):
        history.append(record)
    assert read_history_file(history.path).records == records([10, 20])
    assert history.state_dict() == {"records": 2, "path": history.path}


def test_buffered_records_reach_the_file_at_flush(tmp_path):
    history = UpdateHistory(str(tmp_path / "h.jsonl"), is_writer=True, buffered=True)
    history.start_fresh()
    for record in records([1, 2, 3]):
        history.append(record)
    assert lines_of(history.path) == []
    assert history.records == 3
    history.flush()
    assert read_history_file(history.path).records == records([1, 2, 3])


def test_only_the_writing_process_touches_the_file(tmp_path):
    history = UpdateHistory(str(tmp_path / "h.jsonl"), is_writer=False, buffered=False)
    history.start_fresh()
    history.append(records([1])[0])
    assert not os.path.exists(history.path)
    assert history.records == 1


class FullDisk:
    """An `open` whose binary append handles write half of the data, then fail like a full disk."""

    class Handle:
        def __init__(self, handle):
            self.handle = handle

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

        def write(self, data):
            self.handle.write(data[: len(data) // 2])
            self.handle.flush()
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.handle, name)

    def __call__(self, path, mode="r", *args, **kwargs):
        handle = open(path, mode, *args, **kwargs)
        return self.Handle(handle) if mode == "ab" else handle


def test_a_full_disk_leaves_no_torn_line(tmp_path, monkeypatch):
    history = UpdateHistory(str(tmp_path / "h.jsonl"), is_writer=True, buffered=False)
    history.start_fresh()
    history.append(records([10])[0])
    monkeypatch.setattr(history_module, "open", FullDisk(), raising=False)
    with pytest.raises(OSError, match=r"Could not write 1 update records to .*h.jsonl.*cut back"):
        history.append(records([20])[0])
    monkeypatch.undo()
    assert lines_of(history.path) == [json.dumps(records([10])[0])]


def test_an_interrupted_rewrite_leaves_the_old_file(tmp_path, monkeypatch):
    path = str(tmp_path / "h.jsonl")
    write_atomically(path, records(range(1, 40001)))

    def killed(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(history_module.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        write_atomically(path, records([1]))
    monkeypatch.undo()
    assert len(lines_of(path)) == 40000
    assert os.listdir(tmp_path) == ["h.jsonl"], "no temporary file is left behind"


def test_damaged_lines_are_reported_with_their_numbers(tmp_path):
    path = tmp_path / "h.jsonl"
    good = [json.dumps(record) for record in records([10, 20, 30])]
    path.write_text("\n".join([good[0], '{"step": 1', good[1], "[1, 2]", good[2], '{"step": 40, "tr']) + "\n")
    read = read_history_file(path)
    assert read.records == records([10, 20, 30])
    assert read.damaged_lines == [2, 4, 6]


def test_resume_keeps_records_up_to_the_checkpoint(tmp_path):
    path = str(tmp_path / "h.jsonl")
    write_atomically(path, records([10, 20, 30, 40]))
    history = UpdateHistory(path, is_writer=True, buffered=False)
    history.resume(20, {"records": 2, "path": path})
    assert read_history_file(path).records == records([10, 20])
    assert history.records == 2


def test_resume_reads_the_records_from_the_checkpoints_run_folder(tmp_path):
    first = str(tmp_path / "first" / "h.jsonl")
    write_atomically(first, records([10, 20, 30]))
    second = UpdateHistory(str(tmp_path / "second" / "h.jsonl"), is_writer=True, buffered=False)
    second.resume(20, {"records": 2, "path": first})
    assert read_history_file(second.path).records == records([10, 20])


def test_a_fresh_run_moves_the_previous_history_aside(tmp_path):
    path = str(tmp_path / "h.jsonl")
    write_atomically(path, records([10]))
    write_atomically(str(tmp_path / "h.1.jsonl"), records([5]))
    UpdateHistory(path, is_writer=True, buffered=False).start_fresh()
    assert read_history_file(path).records == []
    assert read_history_file(tmp_path / "h.2.jsonl").records == records([10])
    assert read_history_file(tmp_path / "h.1.jsonl").records == records([5])


def test_a_second_live_run_on_the_same_file_stops_the_first(tmp_path):
    path = str(tmp_path / "h.jsonl")
    first = UpdateHistory(path, is_writer=True, buffered=False)
    first.start_fresh()
    first.append(records([10])[0])
    UpdateHistory(path, is_writer=True, buffered=False).start_fresh()
    with pytest.raises(RuntimeError, match="replaced by another training run"):
        first.append(records([20])[0])


class HistoryLinesAtStepEnd(TrainerCallback):
    """Records how many lines the history file has at the end of every step."""

    def __init__(self, path):
        self.path, self.lines = path, {}

    def on_step_end(self, args, state, control, **kwargs):
        self.lines[state.global_step] = len(lines_of(self.path))


@pytest.mark.slow
def test_odm_writes_its_records_at_checkpoints(tmp_path, toy_tokenizer):
    """One odm record per step, written (and fsynced) at each save and at train end, not at every step."""
    domains = sorted(TOY_VOCAB)
    corpus = toy_corpus({d: 40 for d in domains}, unique=True)
    probe = HistoryLinesAtStepEnd(str(tmp_path / "versatune_history.jsonl"))
    trainer = RecordingSFTTrainer(
        model=tiny_llama(toy_tokenizer),
        args=sft_config(
            tmp_path, max_steps=25, eval_strategy="no", logging_steps=1, save_strategy="steps", save_steps=10
        ),
        train_dataset=corpus,
        processing_class=toy_tokenizer,
        callbacks=[VersaTuneCallback(strategy="odm"), probe],
    )
    trainer.train()
    assert probe.lines[9] == 0 and probe.lines[11] == 10 and probe.lines[21] == 20
    assert [record["step"] for record in read_history(tmp_path)] == list(range(1, 26))
