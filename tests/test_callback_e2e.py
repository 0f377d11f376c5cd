"""End to end: a tiny LLaMA trained through TRL's SFTTrainer with VersaTuneCallback on CPU."""

import json
import math
import os

import pytest

from versatune_hf import VersaTuneCallback, compute_update
from versatune_hf.demo.tiny import TOY_VOCAB, tiny_llama, toy_corpus, toy_eval_sets, train_tiny_tokenizer

from utils import RecordingSFTTrainer, plain_trainer, read_history, sft_config

pytestmark = pytest.mark.slow
DOMAINS = sorted(TOY_VOCAB)
REFERENCE_LOSSES = {"code": 1.0, "law": 1.2, "medicine": 2.5}


@pytest.fixture(scope="module")
def corpus():
    return toy_corpus({"law": 200, "code": 200, "medicine": 200}, unique=True)


@pytest.fixture(scope="module")
def tokenizer(corpus):
    return train_tiny_tokenizer(corpus["text"], vocab_size=400)


def build_trainer(tmp_path, corpus, tokenizer, callback, **config):
    return RecordingSFTTrainer(
        model=tiny_llama(tokenizer),
        args=sft_config(tmp_path, **config),
        train_dataset=corpus,
        eval_dataset=toy_eval_sets(DOMAINS),
        processing_class=tokenizer,
        callbacks=[callback],
    )


def trained_domains_match_sampler(trainer, callback):
    """The domain of every row trained on equals the domain the sampler drew at that position."""
    domains = trainer.train_dataset["domain"]
    trained = [domains[row] for _, row in trainer.trained_rows]
    assert len(trained) == trainer.state.global_step * trainer.args.per_device_train_batch_size
    assert trained == callback.sampler.drawn_domains(0, len(trained))


def test_weights_follow_the_formula_and_are_logged(tmp_path, corpus, tokenizer):
    """Three evaluations move the weights exactly as `compute_update` says, are logged, and drive the rows trained."""
    callback = VersaTuneCallback(train_dataset=corpus, reference_losses=REFERENCE_LOSSES, forgetting_weight=2.0)
    trainer = build_trainer(tmp_path, corpus, tokenizer, callback, save_strategy="steps", save_steps=30)
    trainer.train()

    history = read_history(tmp_path)
    assert [record["step"] for record in history] == [10, 20, 30]
    params = callback.config.update_params()
    for previous, record in zip([None] + history[:-1], history):
        expected = compute_update(
            "versatune",
            record["weights_before"],
            record["losses"],
            record["previous_losses"] or None,
            REFERENCE_LOSSES,
            params,
        )
        assert record["weights_after"] == pytest.approx(expected.weights, rel=1e-9)
        assert record["previous_losses"] == ({} if previous is None else previous["losses"])
        # Direction: a domain's weight ratio after/before grows with its score γ + λ·φ.
        ratios = {d: record["weights_after"][d] / record["weights_before"][d] for d in DOMAINS}
        by_score = sorted(DOMAINS, key=lambda d: record["score"][d])
        assert [ratios[d] for d in by_score] == sorted(ratios.values())
        for d in DOMAINS:
            loss, reference = record["losses"][d], REFERENCE_LOSSES[d]
            assert record["potential"][d] == pytest.approx(max((loss - reference) / loss, 0.0))
    assert history[0]["switch_position"] == (10 + callback.run.switch_delay) * 8

    logged = {key for entry in trainer.state.log_history for key in entry}
    for kind in ("weight", "potential", "forgetting"):
        assert {f"versatune/{kind}/{d}" for d in DOMAINS} <= logged
    with open(os.path.join(tmp_path, "checkpoint-30", "trainer_state.json")) as handle:
        saved = json.load(handle)
    assert any("versatune/weight/law" in entry for entry in saved["log_history"])
    assert (
        saved["stateful_callbacks"]["VersaTuneCallback"]["attributes"]["run_state"]["sampler"]["schedule"][-1][0]
        == (history[-1]["switch_position"])
    )

    for record in history:
        counts = record["realised_counts"]
        drawn = sum(counts.values())
        assert drawn == record["realised_window"][1] - record["realised_window"][0] > 0
        for d in DOMAINS:
            expected = drawn * record["weights_before"][d]
            sigma = math.sqrt(drawn * record["weights_before"][d] * (1 - record["weights_before"][d]))
            assert abs(counts[d] - expected) <= 4 * sigma + 1
    trained_domains_match_sampler(trainer, callback)


def test_shuffle_dataset_labels_follow_the_shuffled_rows(tmp_path, corpus, tokenizer):
    """With SFTConfig(shuffle_dataset=True) the labels come from TRL's prepared (shuffled) rows, so they stay right."""
    callback = VersaTuneCallback(train_dataset=corpus)
    trainer = build_trainer(tmp_path, corpus, tokenizer, callback, shuffle_dataset=True, max_steps=12)
    assert trainer.train_dataset["domain"] != corpus["domain"], "TRL should have reordered the rows"
    trainer.train()
    trained_domains_match_sampler(trainer, callback)


def test_rows_filtered_by_trl_keep_their_labels(tmp_path, tokenizer):
    """Rows TRL drops (completion truncated away) shift the row order; the mixture still weighs the right rows."""
    rows = toy_corpus({"law": 100, "code": 100, "medicine": 100}, unique=True, seed=4)
    long_prompt = " ".join(["court"] * 80)
    data = rows.map(
        lambda row, index: {
            "prompt": long_prompt if index % 7 == 0 else row["text"][:20],
            "completion": row["text"][20:],
        },
        with_indices=True,
        remove_columns=["text"],
    )
    callback = VersaTuneCallback(train_dataset=data)
    trainer = build_trainer(tmp_path, data, tokenizer, callback, max_steps=12)
    assert len(trainer.train_dataset) < len(data), "TRL should have filtered the long-prompt rows"
    trainer.train()
    trained_domains_match_sampler(trainer, callback)


def test_packing_stops_when_the_trainer_is_built_with_the_cause_and_the_fix(tmp_path, corpus, tokenizer):
    """Plain SFTTrainer(packing=True) mixes domains in a packed row (benchmarks/results/packing.md): refused at
    construction, before train() is called."""
    callback = VersaTuneCallback(train_dataset=corpus)
    with pytest.raises(ValueError, match=r"packing=True.*Use versatune_hf.VersaTuneSFTTrainer.*or set packing=False"):
        build_trainer(tmp_path, corpus, tokenizer, callback, packing=True)


def test_reference_model_losses_are_measured_at_train_start(tmp_path, corpus, tokenizer):
    """`reference_model=<path>` evaluates that model on each domain's eval set and uses the losses as ℓ_ref."""
    reference_dir = tmp_path / "reference"
    tiny_llama(tokenizer, seed=1).save_pretrained(reference_dir)
    callback = VersaTuneCallback(train_dataset=corpus, reference_model=str(reference_dir))
    trainer = build_trainer(tmp_path, corpus, tokenizer, callback, max_steps=10)
    trainer.train()
    (record,) = read_history(tmp_path)
    assert set(record["reference_losses"]) == set(DOMAINS)
    # An untrained model's loss is about log(vocab size) on every domain.
    for loss in record["reference_losses"].values():
        assert loss == pytest.approx(math.log(len(tokenizer)), rel=0.1)


def test_plain_transformers_trainer(tmp_path, corpus, tokenizer):
    """The same callback works with `transformers.Trainer` on a tokenized dataset (the Trainer drops `domain`)."""
    tokenized = corpus.map(lambda row: tokenizer(row["text"]), remove_columns=["text"])
    evals = {
        d: ds.map(lambda row: tokenizer(row["text"]), remove_columns=["text"])
        for d, ds in toy_eval_sets(DOMAINS).items()
    }
    callback = VersaTuneCallback(strategy="versatune-official")
    trainer = plain_trainer(
        tmp_path,
        tokenized,
        tokenizer,
        callback,
        eval_dataset=evals,
        max_steps=20,
        eval_strategy="steps",
        eval_steps=10,
    )
    trainer.train()
    history = read_history(tmp_path)
    assert [record["step"] for record in history] == [10, 20]
    first = history[0]
    raw = {d: math.exp(first["losses"][d]) / 3 for d in DOMAINS}
    assert first["weights_after"] == pytest.approx({d: v / sum(raw.values()) for d, v in raw.items()}, rel=1e-9)


def test_weights_reach_tensorboard(tmp_path, corpus, tokenizer):
    """The metrics go through Trainer.log, so reporting integrations (here TensorBoard) record them."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    callback = VersaTuneCallback(train_dataset=corpus, reference_losses=REFERENCE_LOSSES)
    trainer = build_trainer(tmp_path, corpus, tokenizer, callback, max_steps=20, report_to=["tensorboard"])
    trainer.train()
    runs = [root for root, _, files in os.walk(tmp_path) if any("tfevents" in name for name in files)]
    assert runs
    events = EventAccumulator(runs[0])
    events.Reload()
    tags = set(events.Tags()["scalars"])
    for kind in ("weight", "potential", "forgetting"):
        assert {f"train/versatune/{kind}/{d}" for d in DOMAINS} <= tags, sorted(tags)
    assert [event.step for event in events.Scalars("train/versatune/weight/law")] == [0, 10, 20]


@pytest.mark.parametrize("strategy", ["proportional", "doremi", "dbl"])
def test_peer_strategies_run_through_the_callback(tmp_path, tokenizer, strategy):
    corpus = toy_corpus({"law": 50, "code": 150, "medicine": 100}, unique=True, seed=2)
    callback = VersaTuneCallback(train_dataset=corpus, strategy=strategy, reference_losses=REFERENCE_LOSSES, eta=2.0)
    build_trainer(tmp_path, corpus, tokenizer, callback, max_steps=20).train()
    history = read_history(tmp_path)
    assert [record["step"] for record in history] == [10, 20]
    if strategy == "proportional":
        expected = {"code": 0.5, "law": 1 / 6, "medicine": 1 / 3}
        assert all(record["weights_after"] == pytest.approx(expected) for record in history)
    else:
        params = callback.config.update_params()
        for record in history:
            expected = compute_update(
                strategy, record["weights_before"], record["losses"], None, REFERENCE_LOSSES, params
            )
            assert record["weights_after"] == pytest.approx(expected.weights, rel=1e-9)


def test_progress_runs_through_the_callback_from_the_previous_evaluations_losses(tmp_path, tokenizer):
    """`progress` needs the previous evaluation's losses: the first update keeps the weights, each later one is the
    formula applied to the two evaluations' losses, with its default step 0.5 and the highest-loss domain lifted."""
    corpus = toy_corpus({"law": 50, "code": 150, "medicine": 100}, unique=True, seed=2)
    callback = VersaTuneCallback(train_dataset=corpus, strategy="progress")
    build_trainer(tmp_path, corpus, tokenizer, callback, max_steps=30).train()
    history = read_history(tmp_path)
    assert [record["step"] for record in history] == [10, 20, 30]
    assert history[0]["weights_after"] == pytest.approx(history[0]["weights_before"], rel=1e-12)
    params = callback.config.update_params()
    assert params.eta == 0.5 and params.progress_worst_lift == 0.05
    for previous, record in zip(history, history[1:]):
        expected = compute_update(
            "progress", record["weights_before"], record["losses"], previous["losses"], None, params
        )
        assert record["weights_after"] == pytest.approx(expected.weights, rel=1e-9)
        worst = max(record["losses"], key=record["losses"].get)
        assert record["weights_after"][worst] >= 1.05 * record["weights_before"][worst] * (1 - 1e-9)
