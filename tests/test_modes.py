"""VersaTune in every SFTTrainer mode: packing (per domain), padding-free, completion-only, assistant-only,
conversational and prompt-completion data, and PEFT/LoRA."""

import pytest
from peft import LoraConfig, PeftModel

from versatune_hf import VersaTuneCallback
from versatune_hf.demo.tiny import TOY_VOCAB, toy_corpus, toy_eval_sets

from utils import (
    TokenRecordingSFTTrainer,
    TokenRecordingVersaTuneSFTTrainer,
    prompt_completion,
    replayed_batches,
    split_text,
    train_in_mode,
)

pytestmark = pytest.mark.slow
DOMAINS = sorted(TOY_VOCAB)
TEXT = toy_corpus({d: 60 for d in DOMAINS}, unique=True)


def conversational(dataset):
    def convert(row):
        prompt, completion = split_text(row)
        return {"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}]}

    return dataset.map(convert, remove_columns=["text"])


def train_and_check(tmp_path, tokenizer, trainer_class, train, evals, **config):
    """Train 20 steps; the weights update twice and every batch holds exactly the rows the sampler drew."""
    callback = VersaTuneCallback(reference_losses={"code": 1.0, "law": 1.2, "medicine": 2.5}, eta=5.0)
    trainer, history = train_in_mode(tmp_path, tokenizer, trainer_class, train, evals, callback, **config)
    assert [record["step"] for record in history] == [10, 20]
    assert history[1]["weights_after"] != history[0]["weights_before"]

    prepared = trainer.train_dataset
    batches = replayed_batches(trainer, callback, 20)
    ids = prepared["input_ids"]
    assert len(trainer.batch_tokens) == 20
    for step, (tokens, rows) in enumerate(zip(trainer.batch_tokens, batches)):
        assert tokens == [t for row in rows for t in ids[row]], f"batch {step}"
    return trainer


def test_packing_packs_each_domain_separately(tmp_path, toy_tokenizer):
    """Every packed row holds one domain's text only, and batches hold the packed rows the sampler chose."""
    trainer = train_and_check(
        tmp_path,
        toy_tokenizer,
        TokenRecordingVersaTuneSFTTrainer,
        TEXT,
        toy_eval_sets(DOMAINS),
        packing=True,
        max_length=64,
    )
    prepared = trainer.train_dataset
    assert len(prepared) < len(TEXT), "rows were packed"
    words_of = {domain: set(words) for domain, words in TOY_VOCAB.items()}
    for ids, domain in zip(prepared["input_ids"], prepared["domain"]):
        words = {w for w in toy_tokenizer.decode(ids).split() if not w[-1].isdigit() and "<" not in w}
        assert words <= words_of[domain], (domain, words - words_of[domain])


def test_padding_free(tmp_path, toy_tokenizer):
    # TRL refuses max_length with padding_free and no packing; the toy rows are short anyway.
    train_and_check(
        tmp_path,
        toy_tokenizer,
        TokenRecordingSFTTrainer,
        TEXT,
        toy_eval_sets(DOMAINS),
        padding_free=True,
        max_length=None,
    )


def test_prompt_completion_with_completion_only_loss(tmp_path, toy_tokenizer):
    evals = {d: prompt_completion(e) for d, e in toy_eval_sets(DOMAINS).items()}
    trainer = train_and_check(
        tmp_path, toy_tokenizer, TokenRecordingSFTTrainer, prompt_completion(TEXT), evals, completion_only_loss=True
    )
    assert trainer.completion_only_loss


def test_conversational_messages(tmp_path, toy_tokenizer):
    evals = {d: conversational(e) for d, e in toy_eval_sets(DOMAINS).items()}
    train_and_check(tmp_path, toy_tokenizer, TokenRecordingSFTTrainer, conversational(TEXT), evals)


def test_conversational_with_assistant_only_loss(tmp_path, toy_tokenizer):
    evals = {d: conversational(e) for d, e in toy_eval_sets(DOMAINS).items()}
    train_and_check(
        tmp_path, toy_tokenizer, TokenRecordingSFTTrainer, conversational(TEXT), evals, assistant_only_loss=True
    )


def test_peft_lora(tmp_path, toy_tokenizer):
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    trainer = train_and_check(
        tmp_path, toy_tokenizer, TokenRecordingSFTTrainer, TEXT, toy_eval_sets(DOMAINS), peft_config=lora
    )
    assert isinstance(trainer.model, PeftModel)
