"""One eval set split by domain, the overall eval_loss over the domains, and the rows TRL kept per domain."""

import logging
import math
from types import SimpleNamespace

import pytest
from datasets import Dataset
from trl import SFTTrainer

from versatune_hf import VersaTuneCallback
from versatune_hf.demo.tiny import tiny_llama, toy_corpus
from versatune_hf.integrations.eval_sets import OverallEvalLoss, split_by_domain
from versatune_hf.integrations.rows_kept import eval_rows, report_rows_kept, train_rows

from utils import read_history, sft_config

DOMAINS = ["code", "law", "medicine"]


def test_split_by_domain_keeps_each_domains_rows_in_order():
    rows = Dataset.from_dict({"text": [f"t{i}" for i in range(7)], "domain": ["law", "code"] * 3 + ["law"]})
    split = split_by_domain(rows.shuffle(seed=0), "domain")
    assert list(split) == ["code", "law"]
    assert sorted(split["law"]["text"]) == ["t0", "t2", "t4", "t6"]
    assert set(split["code"]["domain"]) == {"code"}
    assert split_by_domain(rows.remove_columns("domain"), "domain") is None
    assert split_by_domain({"law": rows}, "domain") is None
    assert split_by_domain(None, "domain") is None


def test_overall_eval_loss_is_the_row_weighted_mean_written_into_the_last_sets_metrics():
    sets = {"law": [0] * 30, "code": [0] * 10}
    overall = OverallEvalLoss()
    first = {"eval_law_loss": 2.0}
    assert overall.add(first, sets) is None and "eval_loss" not in first
    last = {"eval_code_loss": 4.0}
    assert overall.add(last, sets) == pytest.approx(2.5)
    assert last["eval_loss"] == pytest.approx(2.5)
    # a user's evaluate(eval_dataset=one_set) reports a plain eval_loss: left alone
    single = {"eval_loss": 1.0}
    assert overall.add(single, sets) is None and single == {"eval_loss": 1.0}
    # an evaluation that never reported law's loss gives no overall loss
    assert overall.add({"eval_code_loss": 4.0}, sets) is None


def test_rows_given_and_kept_count_the_table_before_trls_filter():
    table = Dataset.from_dict({"input_ids": [[1]] * 10, "domain": ["law"] * 6 + ["code"] * 4})
    kept = table.filter(lambda row, index: index not in (0, 1, 2, 6), with_indices=True)  # law loses 3, code 1
    args = SimpleNamespace(max_length=32, packing=False)
    assert train_rows(None, kept, {"code": 3, "law": 3}, "domain", args) == {"law": (6, 3), "code": (4, 3)}
    split = split_by_domain(kept, "domain")
    assert eval_rows(split, "domain", args) == {"code": (4, 3), "law": (6, 3)}
    per_domain = {
        "law": Dataset.from_dict({"input_ids": [[1]] * 5}).filter(lambda row, index: index < 2, with_indices=True)
    }
    assert eval_rows(per_domain, "domain", args) == {"law": (5, 2)}
    packing = SimpleNamespace(max_length=32, packing=True)
    assert eval_rows(per_domain, "domain", packing) == {"law": (2, 2)}  # packing chunks, it drops nothing


def test_a_domain_that_lost_many_rows_is_named_with_the_cause(versatune_messages):
    args = SimpleNamespace(max_length=128, truncation_mode="keep_start")
    report_rows_kept({"law": (600, 105), "code": (600, 598)}, {"law": (40, 7), "code": (40, 40)}, args)
    info, warnings = versatune_messages(logging.INFO), versatune_messages(logging.WARNING)
    assert "train law 600->105, code 600->598; eval law 40->7, code 40->40" in info
    assert "law: 495 of 600 train rows (82%)" in warnings and "law: 33 of 40 eval rows (82%)" in warnings
    assert "max_length=128" in warnings and "code" not in warnings


def eval_rows_with_domains(rows_per_domain, seed):
    return toy_corpus(dict.fromkeys(DOMAINS, rows_per_domain), unique=True, seed=seed)


@pytest.mark.slow
def test_one_eval_set_with_a_domain_column_reweights_and_keeps_load_best_model_at_end(tmp_path, toy_tokenizer):
    """The shape of TRL's sft.py: `eval_dataset=dataset["test"]`, one set with the domain column."""
    train = toy_corpus(dict.fromkeys(DOMAINS, 60), seed=2)
    evals = eval_rows_with_domains(8, seed=3)
    callback = VersaTuneCallback(train_dataset=train)
    trainer = SFTTrainer(
        model=tiny_llama(toy_tokenizer),
        args=sft_config(
            tmp_path,
            max_steps=20,
            save_strategy="steps",
            save_steps=10,
            load_best_model_at_end=True,
            metric_for_best_model="eval_loss",
        ),
        train_dataset=train,
        eval_dataset=evals,
        processing_class=toy_tokenizer,
        callbacks=[callback],
    )
    assert sorted(trainer.eval_dataset) == DOMAINS  # split when the trainer was built
    trainer.train()
    assert [record["step"] for record in read_history(tmp_path)] == [10, 20]
    rows = {name: len(rows) for name, rows in trainer.eval_dataset.items()}
    losses = {}  # the Trainer logs each domain's evaluation as its own entry
    for entry in trainer.state.log_history:
        losses.setdefault(entry["step"], {}).update({k: v for k, v in entry.items() if k.endswith("_loss")})
    overall = {step: logged["eval_loss"] for step, logged in losses.items() if "eval_loss" in logged}
    assert sorted(overall) == [10, 20]
    for step, value in overall.items():
        expected = sum(losses[step][f"eval_{d}_loss"] * rows[d] for d in DOMAINS) / sum(rows.values())
        assert value == pytest.approx(expected)
    assert trainer.state.best_metric == pytest.approx(min(overall.values()))
    assert trainer.state.best_model_checkpoint.endswith(f"checkpoint-{min(overall, key=overall.get)}")
    assert "eval_loss" in trainer.evaluate()  # after training too


@pytest.mark.slow
def test_rows_dropped_by_trl_are_reported_per_domain(tmp_path, toy_tokenizer, versatune_messages):
    """Issue 15's new user: most law prompts fill max_length, TRL drops them, and that is now said at train start."""

    def with_long_law_prompts(rows):
        def convert(row):
            number = int(row["text"].split()[-1].removeprefix(row["domain"]))  # unique rows end with "law17"
            long = row["domain"] == "law" and number % 4 != 0
            return {"prompt": " ".join(["court"] * 80) if long else row["text"][:20], "completion": row["text"][20:]}

        return rows.map(convert, remove_columns=["text"])

    train = with_long_law_prompts(toy_corpus(dict.fromkeys(DOMAINS, 40), unique=True, seed=4))
    evals = with_long_law_prompts(eval_rows_with_domains(8, seed=5))
    trainer = SFTTrainer(
        model=tiny_llama(toy_tokenizer),
        args=sft_config(tmp_path, max_steps=2, eval_steps=2),
        train_dataset=train,
        eval_dataset=evals,
        processing_class=toy_tokenizer,
        callbacks=[VersaTuneCallback(train_dataset=train)],
    )
    trainer.train()
    warnings = versatune_messages(logging.WARNING)
    assert "law: 30 of 40 train rows (75%)" in warnings and "law: 6 of 8 eval rows (75%)" in warnings
    assert "max_length=64" in warnings
    assert "code:" not in warnings and "medicine:" not in warnings
    assert math.isfinite(trainer.state.log_history[-1]["train_loss"])
