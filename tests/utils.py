"""Shared builders for the tests: tiny SFT configs and a collator spy."""

from __future__ import annotations


def sft_config(output_dir, **overrides):
    """A CPU SFTConfig for a few dozen steps of a tiny model, evaluating every 10 steps."""
    from trl import SFTConfig

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


class CollatorSpy:
    """Wraps a data collator and records the rows of every batch it collates (train and eval), in order."""

    def __init__(self, collator):
        self.collator = collator
        self.batches = []

    def __call__(self, features):
        self.batches.append([tuple(feature["input_ids"]) for feature in features])
        return self.collator(features)
