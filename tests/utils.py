"""Shared builders for the tests: tiny SFT configs and a trainer that records the rows it trains on."""

from __future__ import annotations

import json
import os

from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments
from trl import SFTConfig, SFTTrainer

from versatune_hf import VersaTuneSFTTrainer, WeightedDomainSampler
from versatune_hf.demo.tiny import tiny_llama

EXIT_BEFORE_FINALIZATION = os.path.join(os.path.dirname(__file__), "distributed", "exit_before_finalization.py")
"""Put before a script launched on several processes: it runs the script unchanged and skips only the interpreter
teardown, where PyTorch's shutdown race sometimes aborts a rank after all work is done (see the file)."""

SUBPROCESS_TIMEOUT = 1800
"""Seconds before a test's subprocess counts as hung: far above any run's time on a loaded 2-core machine (a demo
run that takes 92 s alone once passed 600 s under load), far below CI's 90 minutes."""


def sft_config(output_dir, **overrides):
    """A CPU SFTConfig for a few dozen steps of a tiny model, evaluating every 10 steps."""
    settings = dict(
        output_dir=str(output_dir),
        max_steps=30,
        eval_strategy="steps",
        eval_steps=10,
        per_device_train_batch_size=8,
        per_device_eval_batch_size=8,
        logging_steps=10,
        learning_rate=3e-3,
        max_length=64,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        bf16=False,
        disable_tqdm=True,
        seed=0,
    )
    settings.update(overrides)
    return SFTConfig(**settings)


def read_history(output_dir):
    """The records of `versatune_history.jsonl` in `output_dir`."""
    with open(os.path.join(output_dir, "versatune_history.jsonl")) as handle:
        return [json.loads(line) for line in handle]


def train_in_mode(output_dir, tokenizer, trainer_class, train, evals, callback, **config):
    """Train a tiny LLaMA 20 steps with `trainer_class` in one SFT mode (`peft_config` may be among the options);
    return the trainer and the update history."""
    peft = {"peft_config": config.pop("peft_config")} if "peft_config" in config else {}
    trainer = trainer_class(
        model=tiny_llama(tokenizer),
        args=sft_config(output_dir, **{"max_steps": 20, **config}),
        train_dataset=train,
        eval_dataset=evals,
        processing_class=tokenizer,
        callbacks=[callback],
        **peft,
    )
    trainer.train()
    return trainer, read_history(output_dir)


def plain_trainer(output_dir, tokenized, tokenizer, callback, eval_dataset=None, **overrides):
    """A plain `transformers.Trainer` (no TRL) on a tokenized toy dataset, 8 rows per batch on CPU."""
    settings = dict(
        output_dir=str(output_dir),
        per_device_train_batch_size=8,
        learning_rate=3e-3,
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        save_strategy="no",
    )
    return Trainer(
        model=tiny_llama(tokenizer),
        args=TrainingArguments(**{**settings, **overrides}),
        train_dataset=tokenized,
        eval_dataset=eval_dataset,
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
        callbacks=[callback],
    )


def replay_stream(labels, schedule, seed, count):
    """The first `count` row indices a fresh sampler with this seed and weight schedule draws (one process)."""
    sampler = WeightedDomainSampler(labels, schedule[0][1], seed=seed)
    for position, weights in schedule[1:]:
        sampler.set_weights(weights, position)
    stream = []
    while len(stream) < count:
        stream += list(sampler)
    return stream[:count]


def replayed_batches(trainer, callback, count):
    """The first `count` one-process batches of prepared-row indices the callback's sampler schedule implies."""
    prepared = trainer.train_dataset
    sampler = callback.sampler
    return replay_batches(
        prepared["domain"], sampler.schedule, sampler.seed, trainer.args.per_device_train_batch_size, count
    )


def replay_batches(labels, schedule, seed, batch_size, count):
    """The first `count` batches of a one-process DataLoader over that stream (an epoch's last batch may be short)."""
    epoch_length = len(labels)
    epochs = -(-count * batch_size // epoch_length) + 1
    stream = replay_stream(labels, schedule, seed, epochs * epoch_length)
    batches = []
    for start in range(0, len(stream), epoch_length):
        epoch = stream[start : start + epoch_length]
        batches += [epoch[i : i + batch_size] for i in range(0, epoch_length, batch_size)]
    return batches[:count]


def split_text(row):
    """A toy row's first four words as the prompt, the rest as the completion."""
    words = row["text"].split()
    return " ".join(words[:4]), " " + " ".join(words[4:])


def prompt_completion(dataset):
    """The toy text dataset in TRL's prompt-completion format."""

    def convert(row):
        prompt, completion = split_text(row)
        return {"prompt": prompt, "completion": completion}

    return dataset.map(convert, remove_columns=["text"])


class TokenRecorder:
    """Trainer mixin: records the real (unpadded) tokens of every row of every train batch."""

    def training_step(self, model, inputs, num_items_in_batch=None):
        if not hasattr(self, "batch_rows"):
            self.batch_rows = []
        ids = inputs["input_ids"].tolist()
        masks = inputs["attention_mask"].tolist() if "attention_mask" in inputs else [[1] * len(row) for row in ids]
        self.batch_rows.append([[t for t, keep in zip(row, mask) if keep] for row, mask in zip(ids, masks)])
        return super().training_step(model, inputs, num_items_in_batch)

    @property
    def batch_tokens(self):
        """Each batch's tokens, concatenated row by row (a padding-free batch is a single row already)."""
        return [[t for row in rows for t in row] for rows in self.batch_rows]


class TokenRecordingSFTTrainer(TokenRecorder, SFTTrainer):
    pass


class TokenRecordingVersaTuneSFTTrainer(TokenRecorder, VersaTuneSFTTrainer):
    pass


class RecordingSFTTrainer(SFTTrainer):
    """An SFTTrainer that records, in order, `(global step, prepared-dataset row index)` of every row it trains on
    in this process; the step is the number of optimizer steps completed before the row's batch."""

    def training_step(self, model, inputs, num_items_in_batch=None):
        if not hasattr(self, "trained_rows"):
            self.trained_rows = []
            self._row_of = {tuple(ids): index for index, ids in enumerate(self.train_dataset["input_ids"])}
        for ids, mask in zip(inputs["input_ids"].tolist(), inputs["attention_mask"].tolist()):
            row = self._row_of[tuple(token for token, keep in zip(ids, mask) if keep)]
            self.trained_rows.append((self.state.global_step, row))
        return super().training_step(model, inputs, num_items_in_batch)


TOY_REFERENCE_LOSSES = {"code": 1.0, "law": 1.2, "medicine": 2.5}


def train_checkpointed_toy_run(
    output_dir, corpus, tokenizer, overrides, resume_from=None, strategy="versatune", trainer_class=None, **options
):
    """Train a tiny LLaMA on a toy corpus with a strongly moving mixture (VersaTune by default), saving every 10
    steps unless `overrides` say otherwise; `options` are further `VersaTuneCallback` options. Return the
    (row-recording) trainer and the callback."""
    from versatune_hf import VersaTuneCallback
    from versatune_hf.demo.tiny import tiny_llama, toy_eval_sets

    callback = VersaTuneCallback(
        train_dataset=corpus,
        **{"strategy": strategy, "reference_losses": TOY_REFERENCE_LOSSES, "eta": 5.0, **options},
    )
    trainer = (trainer_class or RecordingSFTTrainer)(
        model=tiny_llama(tokenizer),
        args=sft_config(output_dir, **{"save_strategy": "steps", "save_steps": 10, **overrides}),
        train_dataset=corpus,
        eval_dataset=toy_eval_sets(sorted(set(corpus["domain"]))),
        processing_class=tokenizer,
        callbacks=[callback],
    )
    trainer.train(resume_from_checkpoint=resume_from)
    return trainer, callback


def assert_schedule_resumed(resumed, full, checkpoint):
    """A resumed run's weight schedule is the one its checkpoint saved (the full run's entries a resume can still
    need: those in force from the checkpoint's draw on, and over the head of its epoch), followed by the full run's
    later entries."""
    with open(os.path.join(checkpoint, "trainer_state.json")) as file:
        state = json.load(file)["stateful_callbacks"]["VersaTuneCallback"]["attributes"]["run_state"]["sampler"]
    saved = [[position, dict(zip(state["domains"], vector))] for position, vector in state["schedule"]]
    full, resumed = [list(entry) for entry in full], [list(entry) for entry in resumed]
    assert all(entry in full for entry in saved)
    assert resumed == saved + [entry for entry in full if entry[0] > saved[-1][0]]
