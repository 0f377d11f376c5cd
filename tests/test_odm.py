"""The `odm` strategy (Online Data Mixing): the Exp3 round by hand, per-row training losses, and real training runs
in every SFTTrainer mode."""

import json
import math

import pytest
import torch
import torch.nn.functional as F
from peft import LoraConfig, PeftModel
from trl import SFTTrainer

from versatune_hf import VersaTuneCallback, VersaTuneConfig, VersaTuneSFTTrainer, WeightedDomainStream
from versatune_hf.demo.tiny import TOY_VOCAB, tiny_llama, toy_corpus, toy_eval_sets
from versatune_hf.integrations.training_losses import UnattributableBatchError, row_sums, token_losses
from versatune_hf.mixing import STRATEGIES, BanditState, apply_guards, exploration_rate, odm_update

from utils import (
    RecordingSFTTrainer,
    plain_trainer,
    prompt_completion,
    read_history,
    replayed_batches,
    sft_config,
    train_in_mode,
)

DOMAINS = sorted(TOY_VOCAB)
TEXT = toy_corpus({d: 60 for d in DOMAINS}, unique=True)


def test_exploration_rate_by_hand():
    """ε_0 = 1/K; ε_t = min(1/K, √(ln K / (K·t))): capped at 1/3 for 3 domains until t = 4."""
    assert exploration_rate(3, 0) == pytest.approx(1 / 3)
    assert exploration_rate(3, 3) == pytest.approx(1 / 3)  # √(ln 3 / 9) = 0.349 > 1/3
    assert exploration_rate(3, 4) == pytest.approx(0.302573998)  # √(ln 3 / 12)
    assert exploration_rate(6, 100) == pytest.approx(math.sqrt(math.log(6) / 600))


def test_odm_round_by_hand():
    """R̂ ← 0.9·R̂ + 0.1·L/π for the domains trained on; π = (1 − 3·ε_5)·softmax(ε_4·R̂) + ε_5.

    R̂_a = 0.9·1.0 + 0.1·2.0/0.5 = 1.3, R̂_b = 0.9·0.5 + 0.1·1.0/0.25 = 0.85, R̂_c = 2.0 (not trained on: kept);
    ε_4 = 0.302574, ε_5 = 0.270630; exp(ε_4·R̂) = 1.48194, 1.29328, 1.83150 (sum 4.60672).
    """
    state = BanditState({"a": 1.0, "b": 0.5, "c": 2.0}, rounds=4)
    result = odm_update({"a": 0.5, "b": 0.25, "c": 0.25}, {"a": 2.0, "b": 1.0}, state, smoothing=0.9)
    assert result.state.estimates == pytest.approx({"a": 1.3, "b": 0.85, "c": 2.0})
    assert result.state.rounds == 5
    assert result.exploration == pytest.approx(0.270630411)
    assert result.weights == pytest.approx({"a": 0.331142642, "b": 0.323439705, "c": 0.345417653}, abs=1e-8)
    assert state.estimates == {"a": 1.0, "b": 0.5, "c": 2.0}, "the input state is not modified"


def test_first_rounds_are_uniform_exploration():
    """While ε_t = 1/K the exploitation term has weight 1 − K·ε_t = 0: the mixture stays uniform."""
    result = odm_update(dict.fromkeys("abc", 1 / 3), {"a": 9.0}, BanditState.start(list("abc")), smoothing=0.9)
    assert result.weights == pytest.approx(dict.fromkeys("abc", 1 / 3))
    assert result.state.estimates["a"] == pytest.approx(0.1 * 9.0 * 3)


def test_bandit_state_round_trips_and_rejects_unknown_domains():
    state = BanditState({"a": 1.5, "b": 0.0}, rounds=7)
    assert BanditState.from_state_dict(json.loads(json.dumps(state.state_dict()))) == state
    with pytest.raises(ValueError, match="does not know"):
        odm_update({"a": 0.5, "b": 0.5}, {"z": 1.0}, state, smoothing=0.9)


def test_odm_options_are_validated():
    with pytest.raises(ValueError, match="odm_smoothing must be in"):
        VersaTuneConfig(strategy="odm", odm_smoothing=1.0)
    with pytest.raises(ValueError, match="odm_update_steps must be >= 1"):
        VersaTuneConfig(strategy="odm", odm_update_steps=0)


def test_odm_is_registered_as_a_training_loss_strategy():
    assert STRATEGIES["odm"].reward == "train_loss" and STRATEGIES["odm"].initial_weights == "uniform"
    assert all(STRATEGIES[name].reward == "eval_loss" for name in STRATEGIES if name != "odm")


def test_token_losses_from_logits_match_the_models_own_loss():
    """The logits path repeats the model's shift: the token-mean of the row sums is the model's loss."""
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 11)
    labels = torch.tensor([[1, 2, 3, -100, -100], [-100, 4, 5, 6, 7]])
    losses, mask = token_losses(type("Output", (), {"logits": logits})(), labels)
    sums, counts = row_sums(losses, mask, None, rows_per_batch=2)
    expected = F.cross_entropy(logits[:, :-1].reshape(-1, 11), labels[:, 1:].reshape(-1), ignore_index=-100)
    assert counts.tolist() == [2, 4]
    assert (sums.sum() / counts.sum()).item() == pytest.approx(expected.item(), rel=1e-6)
    row_one = F.cross_entropy(logits[1, :-1], labels[1, 1:], reduction="sum")
    assert sums[1].item() == pytest.approx(row_one.item(), rel=1e-6)


def test_fused_outputs_are_read_directly():
    """TRL's fused LM head gives −log p per next-token position and the label mask."""
    output = type(
        "Output", (), {"log_probs": torch.tensor([[-1.0, -2.0, 0.0]]), "label_mask": torch.tensor([[1, 1, 0]])}
    )
    losses, mask = token_losses(output(), None)
    sums, counts = row_sums(losses, mask, None, rows_per_batch=1)
    assert sums.tolist() == [3.0] and counts.tolist() == [2]


def test_padding_free_row_is_split_at_position_restarts():
    """Tokens 0-2, 3-4 and 5-7 are three sequences; the loss at position k belongs to token k + 1's sequence."""
    position_ids = torch.tensor([[0, 1, 2, 0, 1, 0, 1, 2]])
    losses = torch.tensor([[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0]])
    mask = torch.tensor([[True, True, False, True, False, True, True]])
    sums, counts = row_sums(losses, mask, position_ids, rows_per_batch=4)
    assert sums.tolist() == [3.0, 8.0, 96.0]
    assert counts.tolist() == [2, 1, 2]
    with pytest.raises(UnattributableBatchError, match="padding_free=False"):
        row_sums(losses, mask, position_ids, rows_per_batch=2)


def test_outputs_without_losses_are_an_error():
    with pytest.raises(UnattributableBatchError, match="labels"):
        token_losses(type("Output", (), {"logits": torch.zeros(1, 3, 4)})(), None)


# ---------------------------------------------------------------------------------------------------- end to end


def train_odm(output_dir, corpus, tokenizer, resume_from=None, **config):
    callback = VersaTuneCallback(train_dataset=corpus, strategy="odm", odm_update_steps=config.pop("rounds_every", 1))
    trainer = RecordingSFTTrainer(
        model=tiny_llama(tokenizer),
        args=sft_config(output_dir, **{"logging_steps": 1, "eval_strategy": "no", **config}),
        train_dataset=corpus,
        eval_dataset=toy_eval_sets(DOMAINS),
        processing_class=tokenizer,
        callbacks=[callback],
    )
    trainer.train(resume_from_checkpoint=resume_from)
    return trainer, callback, read_history(output_dir)


def assert_rewards_weigh_to_the_logged_loss(trainer, history):
    """Token-weighted, a round's per-domain rewards are the step's training loss the Trainer logged (one step per
    round, no gradient accumulation): no micro-batch was missed or counted twice."""
    logged_loss = {entry["step"]: entry["loss"] for entry in trainer.state.log_history if "loss" in entry}
    for record in history:
        total = sum(record["rewards"][d] * record["reward_tokens"][d] for d in record["rewards"])
        assert total / sum(record["reward_tokens"].values()) == pytest.approx(logged_loss[record["step"]], rel=1e-5)


def prepared_label_count(row):
    """Next-token positions of a prepared row that carry a loss (all of them unless TRL built masked labels)."""
    if "labels" in row:
        return sum(label != -100 for label in row["labels"][1:])
    return len(row["input_ids"]) - 1


@pytest.mark.slow
def test_odm_rounds_follow_the_formula_on_the_rows_trained(tmp_path, toy_tokenizer):
    """Every step is a bandit round: its rewards cover exactly the label tokens of the rows trained in that step,
    weigh to the Trainer's logged loss, and move the weights exactly as `odm_update` (then the guards) says."""
    trainer, callback, history = train_odm(tmp_path, TEXT, toy_tokenizer, max_steps=30)
    assert [record["step"] for record in history] == list(range(1, 31))
    assert_rewards_weigh_to_the_logged_loss(trainer, history)
    domains = trainer.train_dataset["domain"]
    state = BanditState.start(DOMAINS)
    for record in history:
        rows = [row for step, row in trainer.trained_rows if step == record["step"] - 1]
        tokens = dict.fromkeys(DOMAINS, 0)
        for row in rows:
            tokens[domains[row]] += prepared_label_count(trainer.train_dataset[row])
        assert record["reward_tokens"] == {d: float(n) for d, n in tokens.items()}
        expected = odm_update(record["drawn_with"], record["rewards"], state, smoothing=0.9)
        state = expected.state
        assert record["estimates"] == pytest.approx(expected.state.estimates, rel=1e-12)
        guarded = apply_guards(record["weights_before"], expected.weights, callback.config.update_params())
        assert record["weights_after"] == pytest.approx(guarded, rel=1e-12)
    assert history[-1]["exploration"] < 1 / 3, "after 30 rounds the bandit exploits"
    assert len({round(w, 6) for w in history[-1]["weights_after"].values()}) == 3, "the weights moved apart"
    logged = {key for entry in trainer.state.log_history for key in entry}
    assert {f"versatune/{kind}/{d}" for kind in ("weight", "reward", "estimate") for d in DOMAINS} <= logged
    assert sum("loss" in entry for entry in trainer.state.log_history) == 30, "the Trainer's own logs are kept"


@pytest.mark.slow
def test_odm_resumes_mid_round_exactly(tmp_path, toy_tokenizer):
    """A checkpoint taken inside a 3-step round keeps the round's partial sums: the resumed run's history matches."""
    options = dict(max_steps=20, rounds_every=3, save_strategy="steps", save_steps=10)
    _, _, full = train_odm(tmp_path / "full", TEXT, toy_tokenizer, **options)
    checkpoint = str(tmp_path / "full" / "checkpoint-10")
    _, _, resumed = train_odm(tmp_path / "full", TEXT, toy_tokenizer, resume_from=checkpoint, **options)
    assert [record["step"] for record in full] == [3, 6, 9, 12, 15, 18]
    assert resumed == full


def train_odm_in_mode(tmp_path, tokenizer, trainer_class, train, evals, **config):
    """20 odm rounds in one SFTTrainer mode; returns the trainer, callback and history."""
    callback = VersaTuneCallback(strategy="odm")
    options = {"logging_steps": 1, "eval_strategy": "no", **config}
    trainer, history = train_in_mode(tmp_path, tokenizer, trainer_class, train, evals, callback, **options)
    assert [record["step"] for record in history] == list(range(1, 21))
    assert_rewards_weigh_to_the_logged_loss(trainer, history)
    return trainer, callback, history


def assert_reward_tokens_follow_the_drawn_rows(trainer, callback, history):
    """Each step's per-domain token counts are those of the rows the (independently replayed) sampler drew."""
    prepared = trainer.train_dataset
    batches = replayed_batches(trainer, callback, 20)
    for record, rows in zip(history, batches):
        tokens = dict.fromkeys(DOMAINS, 0.0)
        for row in rows:
            tokens[prepared[row]["domain"]] += prepared_label_count(prepared[row])
        assert record["reward_tokens"] == tokens, f"step {record['step']}"


@pytest.mark.slow
def test_odm_padding_free_splits_the_flattened_batch(tmp_path, toy_tokenizer):
    trainer, callback, history = train_odm_in_mode(
        tmp_path, toy_tokenizer, SFTTrainer, TEXT, toy_eval_sets(DOMAINS), padding_free=True, max_length=None
    )
    assert_reward_tokens_follow_the_drawn_rows(trainer, callback, history)


@pytest.mark.slow
def test_odm_completion_only_loss_counts_completion_tokens(tmp_path, toy_tokenizer):
    evals = {d: prompt_completion(e) for d, e in toy_eval_sets(DOMAINS).items()}
    trainer, callback, history = train_odm_in_mode(
        tmp_path, toy_tokenizer, SFTTrainer, prompt_completion(TEXT), evals, completion_only_loss=True
    )
    assert_reward_tokens_follow_the_drawn_rows(trainer, callback, history)


@pytest.mark.slow
def test_odm_with_lora(tmp_path, toy_tokenizer):
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    trainer, callback, history = train_odm_in_mode(
        tmp_path, toy_tokenizer, SFTTrainer, TEXT, toy_eval_sets(DOMAINS), peft_config=lora
    )
    assert isinstance(trainer.model, PeftModel)
    assert_reward_tokens_follow_the_drawn_rows(trainer, callback, history)


@pytest.mark.slow
def test_odm_with_per_domain_wrapped_packing(tmp_path, toy_tokenizer):
    trainer, _, history = train_odm_in_mode(
        tmp_path,
        toy_tokenizer,
        VersaTuneSFTTrainer,
        TEXT,
        toy_eval_sets(DOMAINS),
        packing=True,
        packing_strategy="wrapped",
        max_length=64,
    )
    assert len(trainer.train_dataset) < len(TEXT), "rows were packed"
    assert history[-1]["weights_after"] != history[0]["weights_before"]


@pytest.mark.slow
def test_odm_refuses_padding_free_packing(tmp_path, toy_tokenizer):
    """bfd packing is always padding-free: packed rows lose their boundaries, so odm says how to fix it."""
    with pytest.raises(ValueError, match="padding_free=False"):
        train_odm_in_mode(tmp_path, toy_tokenizer, VersaTuneSFTTrainer, TEXT, toy_eval_sets(DOMAINS), packing=True)


@pytest.mark.slow
def test_odm_with_plain_transformers_trainer_reads_logits(tmp_path, toy_tokenizer):
    """`transformers.Trainer` returns logits (no fused head): the per-domain losses come from logits and labels."""
    tokenized = TEXT.map(lambda row: toy_tokenizer(row["text"]), remove_columns=["text"])
    callback = VersaTuneCallback(strategy="odm")
    trainer = plain_trainer(tmp_path, tokenized, toy_tokenizer, callback, max_steps=10, logging_steps=1)
    trainer.train()
    history = read_history(tmp_path)
    assert [record["step"] for record in history] == list(range(1, 11))
    assert_rewards_weigh_to_the_logged_loss(trainer, history)


@pytest.mark.slow
def test_odm_refuses_a_stream(tmp_path, toy_tokenizer):
    """A stream's rows cannot be named by position yet: odm says so instead of guessing."""
    stream = WeightedDomainStream({d: TEXT.filter(lambda row, d=d: row["domain"] == d) for d in DOMAINS}, seed=0)
    trainer = SFTTrainer(
        model=tiny_llama(toy_tokenizer),
        args=sft_config(tmp_path, max_steps=5, eval_strategy="no"),
        train_dataset=stream.dataset,
        processing_class=toy_tokenizer,
        callbacks=[VersaTuneCallback(train_dataset=stream, strategy="odm")],
    )
    with pytest.raises(ValueError, match="WeightedDomainStream"):
        trainer.train()
