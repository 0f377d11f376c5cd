"""Bad input gets a clear error (what is wrong, how to fix it) or a documented, logged fallback."""

import json
import logging
import math
import os

import numpy as np
import pytest
from datasets import Dataset
from transformers import Trainer, TrainingArguments, default_data_collator

from versatune_hf import VersaTuneCallback, WeightedDomainSampler
from versatune_hf.demo.tiny import TOY_VOCAB, tiny_llama, toy_corpus, toy_eval_sets

from utils import RecordingSFTTrainer, sft_config

DOMAINS = sorted(TOY_VOCAB)
CORPUS = toy_corpus({d: 40 for d in DOMAINS})


def build(tmp_path, tokenizer, callback, train=CORPUS, evals=None, **config):
    return RecordingSFTTrainer(
        model=tiny_llama(tokenizer),
        args=sft_config(tmp_path, **{"max_steps": 10, **config}),
        train_dataset=train,
        eval_dataset=toy_eval_sets(DOMAINS, rows=8) if evals is None else evals,
        processing_class=tokenizer,
        callbacks=[callback],
    )


def history(tmp_path):
    with open(os.path.join(tmp_path, "versatune_history.jsonl")) as handle:
        return [json.loads(line) for line in handle]


@pytest.fixture
def warnings_of(versatune_messages):
    return lambda: versatune_messages(logging.WARNING)


@pytest.mark.slow
class TestErrorsAtTrainStart:
    """Each case stops before the first optimizer step with a message naming the problem and the fix."""

    def expect_error(self, trainer, pattern):
        with pytest.raises(ValueError, match=pattern):
            trainer.train()
        assert trainer.state.global_step == 0

    def test_missing_domain_column(self, tmp_path, toy_tokenizer):
        train = CORPUS.remove_columns("domain")
        callback = VersaTuneCallback(train_dataset=train)
        self.expect_error(build(tmp_path, toy_tokenizer, callback, train=train), r"no 'domain' column.*domain_column=")

    def test_train_domain_without_eval_set(self, tmp_path, toy_tokenizer):
        evals = toy_eval_sets(["law", "code"], rows=8)
        trainer = build(tmp_path, toy_tokenizer, VersaTuneCallback(), evals=evals)
        self.expect_error(trainer, r"Train domains \['medicine'\] have no eval set.*Add them to eval_dataset")

    def test_empty_eval_set(self, tmp_path, toy_tokenizer):
        trainer = build(tmp_path, toy_tokenizer, VersaTuneCallback())
        # TRL itself fails on an empty eval set while preparing it; a plain Trainer accepts one, as here.
        trainer.eval_dataset["law"] = trainer.eval_dataset["law"].select([])
        self.expect_error(trainer, r"eval sets of domains \['law'\] are empty")

    def test_eval_dataset_not_a_dict(self, tmp_path, toy_tokenizer):
        evals = toy_eval_sets(["law"], rows=8)["law"]
        trainer = build(tmp_path, toy_tokenizer, VersaTuneCallback(), evals=evals)
        self.expect_error(trainer, r"one eval set per domain.*no .domain. column.*eval_dataset=\{domain: dataset")

    def test_initial_weights_for_unknown_domains(self, tmp_path, toy_tokenizer):
        callback = VersaTuneCallback(initial_weights={"law": 0.5, "finance": 0.5})
        self.expect_error(
            build(tmp_path, toy_tokenizer, callback), r"not in the train set: \['finance'\].*no weight.*'code'"
        )

    def test_reference_losses_for_some_domains_where_gamma_is_compared(self, tmp_path, toy_tokenizer):
        """`versatune` compares γ across domains: a γ for law and raw losses for the others would mix scales."""
        callback = VersaTuneCallback(reference_losses={"law": 1.0})
        self.expect_error(
            build(tmp_path, toy_tokenizer, callback), r"cover domains \['law'\] but not \['code', 'medicine'\]"
        )

    def test_detection_file_for_other_domains(self, tmp_path, toy_tokenizer):
        path = tmp_path / "detect.json"
        path.write_text(json.dumps({"shares": {"law": 0.2, "finance": 0.3, "science": 0.5}}))
        callback = VersaTuneCallback(initial_weights=str(path))
        self.expect_error(build(tmp_path, toy_tokenizer, callback), r"detect.json.*\['finance', 'science'\]")


def test_negative_initial_weights_are_rejected_at_construction():
    with pytest.raises(ValueError, match=r"initial_weights\['law'\].*non-negative"):
        VersaTuneCallback(initial_weights={"law": -0.1, "code": 0.6, "medicine": 0.5})


@pytest.mark.slow
class TestLoggedFallbacks:
    """Each case trains, does the documented thing and says so in a warning."""

    def test_weights_not_summing_to_one_are_normalised(self, tmp_path, toy_tokenizer, warnings_of):
        callback = VersaTuneCallback(strategy="static", initial_weights={"law": 2, "code": 1, "medicine": 1})
        build(tmp_path, toy_tokenizer, callback).train()
        assert history(tmp_path)[0]["weights_before"] == {"code": 0.25, "law": 0.5, "medicine": 0.25}
        assert "sums to 4, not 1; normalising it" in warnings_of()

    def test_eval_set_for_a_domain_absent_from_training(self, tmp_path, toy_tokenizer, warnings_of):
        evals = {**toy_eval_sets(DOMAINS, rows=8), "finance": toy_eval_sets(["law"], rows=8)["law"]}
        build(tmp_path, toy_tokenizer, VersaTuneCallback(), evals=evals).train()
        assert set(history(tmp_path)[0]["losses"]) == set(DOMAINS)
        assert "Eval sets ['finance'] are not train domains" in warnings_of()

    def test_single_domain(self, tmp_path, toy_tokenizer, warnings_of):
        train = toy_corpus({"law": 40})
        callback = VersaTuneCallback(train_dataset=train)
        build(tmp_path, toy_tokenizer, callback, train=train, evals=toy_eval_sets(["law"], rows=8)).train()
        assert history(tmp_path)[0]["weights_after"] == {"law": 1.0}
        assert "single domain ['law']" in warnings_of()

    def test_evaluation_disabled(self, tmp_path, toy_tokenizer, warnings_of):
        trainer = build(tmp_path, toy_tokenizer, VersaTuneCallback(), eval_strategy="no")
        trainer.train()
        assert history(tmp_path) == []
        assert trainer.state.global_step == 10
        assert "Evaluation is disabled" in warnings_of()

    def test_reference_losses_missing_for_some_domains(self, tmp_path, toy_tokenizer, warnings_of):
        """`expansion` only uses the target's γ, so references for some domains are enough (with a warning)."""
        callback = VersaTuneCallback(
            strategy="expansion", target_domain="law", reference_losses={"law": 1.0, "finance": 1.0}
        )
        build(tmp_path, toy_tokenizer, callback).train()
        record = history(tmp_path)[0]
        assert record["potential"]["code"] is None
        assert record["potential"]["law"] == pytest.approx(max(1 - 1.0 / record["losses"]["law"], 0))
        assert "No reference loss for domains ['code', 'medicine']" in warnings_of()
        assert "['finance'] that are not in the train set" in warnings_of()

    def test_reference_losses_near_zero_warn_that_the_update_does_nothing(self, tmp_path, toy_tokenizer, warnings_of):
        callback = VersaTuneCallback(reference_losses={d: 0.0 for d in DOMAINS})
        build(tmp_path, toy_tokenizer, callback).train()
        assert history(tmp_path)[0]["potential"] == {d: 1.0 for d in DOMAINS}
        assert "nearly the same learnable potential" in warnings_of()

    def test_nan_eval_loss_keeps_that_domains_weight(self, tmp_path, toy_tokenizer, warnings_of):
        """An eval set whose labels are all masked gives a NaN loss: that domain's weight is held."""

        def tokenized(texts, masked):
            rows = []
            for text in texts:
                ids = toy_tokenizer(text)["input_ids"][:8]
                rows.append(
                    {
                        "input_ids": ids,
                        "attention_mask": [1] * len(ids),
                        "labels": [-100] * len(ids) if masked else ids,
                    }
                )
            return Dataset.from_list(rows)

        texts = {d: list(toy_eval_sets(DOMAINS, rows=4)[d]["text"]) for d in DOMAINS}
        train = Dataset.from_list(
            [{**row, "domain": d} for d in DOMAINS for row in tokenized(texts[d] * 10, masked=False)]
        )
        callback = VersaTuneCallback(train_dataset=train, initial_weights={"law": 0.5, "code": 0.25, "medicine": 0.25})
        trainer = Trainer(
            model=tiny_llama(toy_tokenizer),
            args=TrainingArguments(
                output_dir=str(tmp_path),
                max_steps=10,
                eval_strategy="steps",
                eval_steps=10,
                report_to=[],
                per_device_train_batch_size=4,
                use_cpu=True,
                save_strategy="no",
                disable_tqdm=True,
            ),
            train_dataset=train,
            eval_dataset={d: tokenized(texts[d], masked=(d == "law")) for d in DOMAINS},
            data_collator=default_data_collator,
            callbacks=[callback],
        )
        trainer.train()
        record = history(tmp_path)[0]
        assert record["held"] == ["law"] and record["losses"]["law"] is None
        assert record["weights_after"]["law"] == pytest.approx(0.5)
        assert math.fsum(record["weights_after"].values()) == pytest.approx(1.0)
        assert record["weights_after"]["code"] != pytest.approx(0.25)
        assert "NaN or infinite for domains ['law']" in warnings_of()


def test_extreme_imbalance_ten_rows_against_a_million():
    """10 rows vs 1,000,000: shares follow the weights and the small domain's rows are used evenly."""
    labels = np.array(["big"] * 1_000_000 + ["small"] * 10)
    sampler = WeightedDomainSampler(labels, {"big": 0.5, "small": 0.5}, seed=0)
    iterator = iter(sampler)
    rows = np.fromiter((next(iterator) for _ in range(200_000)), dtype=np.int64, count=200_000)
    small = rows[rows >= 1_000_000]
    assert len(small) / len(rows) == pytest.approx(0.5, abs=0.005)
    per_row = np.bincount(small - 1_000_000, minlength=10)
    assert per_row.max() - per_row.min() <= 1, "a domain's rows are cycled without repetition"
    assert len(np.unique(rows[rows < 1_000_000])) == len(rows) - len(small), "no big-domain row repeats"
    assert sampler.state_dict()["domain_sizes"] == [1_000_000, 10]
