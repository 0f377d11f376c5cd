"""WeightedDomainStream: live weights over per-domain iterable datasets, through SFTTrainer, with exact resume."""

import itertools
import json
import re
import shutil

import pytest
from datasets import interleave_datasets

from versatune_hf import VersaTuneCallback, WeightedDomainStream
from versatune_hf.demo.tiny import TOY_VOCAB, tiny_llama, toy_corpus, toy_eval_sets

from utils import TokenRecordingSFTTrainer, sft_config

DOMAINS = sorted(TOY_VOCAB)
CORPUS = toy_corpus({d: 50 for d in DOMAINS}, unique=True)


def sources(seed=0):
    """One shuffled `datasets.IterableDataset` per domain, built locally."""
    return {
        d: CORPUS.filter(lambda row, d=d: row["domain"] == d)
        .remove_columns("domain")
        .to_iterable_dataset()
        .shuffle(seed=seed, buffer_size=16)
        for d in DOMAINS
    }


def texts(stream, count):
    return [row["text"] for row in itertools.islice(iter(stream.dataset), count)]


def test_shares_follow_the_weights_and_domains_cycle():
    stream = WeightedDomainStream(sources(), {"code": 0.2, "law": 0.2, "medicine": 0.6}, seed=1)
    rows = list(itertools.islice(iter(stream.dataset), 3000))
    shares = {d: sum(row["domain"] == d for row in rows) / len(rows) for d in DOMAINS}
    assert shares == pytest.approx({"code": 0.2, "law": 0.2, "medicine": 0.6}, abs=0.03)
    medicine = [row["text"] for row in rows if row["domain"] == "medicine"]
    assert len(set(medicine[:50])) == 50, "a domain's rows are not repeated within a cycle"
    assert medicine[:50] != medicine[50:100] and set(medicine[:50]) == set(medicine[50:100]), "reshuffled per cycle"


def test_same_seed_same_stream():
    assert texts(WeightedDomainStream(sources(), seed=3), 200) == texts(WeightedDomainStream(sources(), seed=3), 200)
    assert texts(WeightedDomainStream(sources(), seed=3), 200) != texts(WeightedDomainStream(sources(), seed=4), 200)


def test_weights_switch_at_the_scheduled_position_while_iterating():
    stream = WeightedDomainStream(sources(), {"code": 1.0, "law": 0.0, "medicine": 0.0}, seed=0)
    iterator = iter(stream.dataset)
    head = [next(iterator)["domain"] for _ in range(40)]
    stream.set_weights({"code": 0.0, "law": 0.0, "medicine": 1.0}, 60)
    tail = [next(iterator)["domain"] for _ in range(60)]
    assert set(head + tail[:20]) == {"code"} and set(tail[20:]) == {"medicine"}
    assert stream.drawn_domains(0, 100) == head + tail
    with pytest.raises(RuntimeError, match="at draw 100 or later"):
        stream.set_weights({"code": 1.0, "law": 0.0, "medicine": 0.0}, 99)


def test_state_round_trip_replays_the_stream():
    original = WeightedDomainStream(sources(), seed=5)
    original.set_weights({"code": 0.7, "law": 0.2, "medicine": 0.1}, 30)
    expected = texts(original, 100)
    restored = WeightedDomainStream(sources(), seed=0)
    restored.load_state_dict(json.loads(json.dumps(original.state_dict())))
    assert texts(restored, 100) == expected
    with pytest.raises(ValueError, match="same datasets"):
        WeightedDomainStream({"law": sources()["law"]}).load_state_dict(original.state_dict())


def test_interleave_datasets_fixes_its_probabilities_up_front():
    """The contrast the docs draw: `interleave_datasets` has no way to change its mixture once built."""
    fixed = interleave_datasets(list(sources().values()), probabilities=[1.0, 0.0, 0.0], seed=0)
    assert {row["text"].split()[-1][:4] for row in itertools.islice(iter(fixed), 30)} == {"code"}
    assert not hasattr(fixed, "set_weights")


def run(output_dir, tokenizer, resume_from=None):
    stream = WeightedDomainStream(sources(), seed=0)
    callback = VersaTuneCallback(
        train_dataset=stream, reference_losses={"code": 1.0, "law": 1.2, "medicine": 2.5}, eta=5.0
    )
    trainer = TokenRecordingSFTTrainer(
        model=tiny_llama(tokenizer),
        args=sft_config(output_dir, max_steps=30, save_strategy="steps", save_steps=10),
        train_dataset=stream.dataset,
        eval_dataset=toy_eval_sets(DOMAINS),
        processing_class=tokenizer,
        callbacks=[callback],
    )
    trainer.train(resume_from_checkpoint=resume_from)
    trained = [tokenizer.decode(row) for rows in trainer.batch_rows for row in rows]
    return trainer, stream, trained


@pytest.mark.slow
def test_sft_trainer_on_a_stream_follows_the_weights_and_resumes_exactly(tmp_path, toy_tokenizer):
    trainer, stream, trained = run(tmp_path / "full", toy_tokenizer)
    with open(tmp_path / "full" / "versatune_history.jsonl") as handle:
        history = [json.loads(line) for line in handle]
    assert [record["step"] for record in history] == [10, 20, 30]
    assert len(stream.schedule) == 4
    # Each trained row's domain (its text ends with "<domain><row>") is the domain the stream drew there.
    domains = [re.findall(r"(code|law|medicine)\d+", text)[-1] for text in trained]
    assert domains == stream.drawn_domains(0, len(trained))

    shutil.copytree(tmp_path / "full", tmp_path / "resumed")
    shutil.rmtree(tmp_path / "resumed" / "checkpoint-20")
    shutil.rmtree(tmp_path / "resumed" / "checkpoint-30")
    _, resumed_stream, resumed_trained = run(
        tmp_path / "resumed", toy_tokenizer, resume_from=str(tmp_path / "resumed" / "checkpoint-10")
    )
    assert resumed_trained == trained[10 * 8 :]
    assert resumed_stream.schedule == stream.schedule
    with open(tmp_path / "resumed" / "versatune_history.jsonl") as handle:
        assert [json.loads(line) for line in handle] == history


@pytest.mark.slow
def test_stream_with_dataloader_workers_is_refused(tmp_path, toy_tokenizer):
    stream = WeightedDomainStream(sources(), seed=0)
    trainer = TokenRecordingSFTTrainer(
        model=tiny_llama(toy_tokenizer),
        args=sft_config(tmp_path, dataloader_num_workers=2),
        train_dataset=stream.dataset,
        eval_dataset=toy_eval_sets(DOMAINS),
        processing_class=toy_tokenizer,
        callbacks=[VersaTuneCallback(train_dataset=stream)],
    )
    with pytest.raises(ValueError, match="dataloader_num_workers=0"):
        trainer.train()
