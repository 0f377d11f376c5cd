"""With the default options, one evaluation whose loss jumps by orders of magnitude cannot collapse the mixture, and
the user is told at that update."""

import logging

import pytest

from versatune_hf import VersaTuneCallback, VersaTuneConfig
from versatune_hf.demo.tiny import TOY_VOCAB, tiny_llama, toy_corpus, toy_eval_sets
from versatune_hf.integrations.evaluation import EvalLossUpdates
from versatune_hf.mixing import compute_update
from versatune_hf.mixing.guards import divergent_domains

from utils import RecordingSFTTrainer, read_history, sft_config

DOMAINS = sorted(TOY_VOCAB)
SANE = {"code": 2.0, "law": 2.4, "medicine": 2.2}


def test_divergent_domains_compare_with_the_previous_loss_else_the_median():
    assert divergent_domains({"law": 30.0, "code": 2.0}, {"law": 2.5, "code": 2.1}, 10.0) == ["law"]
    assert divergent_domains({"law": 20.0, "code": 2.0}, {"law": 2.5, "code": 2.1}, 10.0) == []  # 8x: not yet
    assert divergent_domains({"law": 1e4, "code": 2.0, "medicine": 2.2}, None, 10.0) == ["law"]  # first evaluation
    assert divergent_domains({"law": 1e4, "code": 2.0}, {"law": 2.5}, None) == []  # check off


def test_the_default_holds_a_jump_the_unguarded_update_collapses_on():
    weights = dict.fromkeys(DOMAINS, 1 / 3)
    jumped = {**SANE, "law": 1.2e4}
    guarded = compute_update("versatune", weights, jumped, SANE, None, VersaTuneConfig().update_params())
    assert guarded.weights["law"] == pytest.approx(1 / 3) and guarded.diverged == ["law"] and guarded.held == ["law"]
    assert guarded.weights["code"] + guarded.weights["medicine"] == pytest.approx(2 / 3)
    unguarded = VersaTuneConfig(divergence_factor=None).update_params()
    collapsed = compute_update("versatune", weights, jumped, SANE, None, unguarded)
    assert collapsed.weights["code"] == pytest.approx(0.01) and collapsed.weights["medicine"] == pytest.approx(0.01)


def test_the_driver_warns_and_compares_the_next_evaluation_with_the_loss_before_the_jump(versatune_messages):
    driver = EvalLossUpdates(VersaTuneConfig(), DOMAINS)
    weights = dict.fromkeys(DOMAINS, 1 / 3)
    weights = driver.update(weights, SANE).weights
    jump = driver.update(weights, {**SANE, "law": 1.2e4, "code": 1.9e4, "medicine": 1.5e4})  # every domain diverged
    assert jump.weights == weights and jump.record["diverged"] == DOMAINS
    warnings = versatune_messages(logging.WARNING)
    assert "jumped by more than divergence_factor=10.0" in warnings and "law 1.2e+04 (previous 2.4)" in warnings
    assert driver.previous_losses == SANE
    recovered = driver.update(weights, {"code": 1.9, "law": 2.3, "medicine": 2.1})
    assert recovered.record["diverged"] == [] and recovered.weights != weights


class EvalLawBlowsUpAtStep20(RecordingSFTTrainer):
    """A trainer whose law evaluation at step 20 reports a loss 10,000 times the real one (an fp16 overflow)."""

    def evaluation_loop(self, *args, metric_key_prefix="eval", **kwargs):
        output = super().evaluation_loop(*args, metric_key_prefix=metric_key_prefix, **kwargs)
        if metric_key_prefix == "eval_law" and self.state.global_step == 20:
            output.metrics["eval_law_loss"] *= 1e4
        return output


@pytest.mark.slow
def test_a_diverged_evaluation_during_training_keeps_the_mixture(tmp_path, toy_tokenizer, versatune_messages):
    trainer = EvalLawBlowsUpAtStep20(
        model=tiny_llama(toy_tokenizer),
        args=sft_config(tmp_path, max_steps=30),
        train_dataset=toy_corpus(dict.fromkeys(DOMAINS, 60)),
        eval_dataset=toy_eval_sets(DOMAINS),
        processing_class=toy_tokenizer,
        callbacks=[VersaTuneCallback()],
    )
    trainer.train()
    history = read_history(tmp_path)
    assert [record["diverged"] for record in history] == [[], ["law"], []]
    at_jump = history[1]
    assert at_jump["weights_after"]["law"] == pytest.approx(at_jump["weights_before"]["law"])
    assert min(at_jump["weights_after"].values()) > 0.2  # nothing went to the floor
    assert history[2]["previous_losses"]["law"] == history[0]["losses"]["law"]
    assert "law" in versatune_messages(logging.WARNING) and "training may be diverging" in versatune_messages()
