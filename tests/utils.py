"""Shared builders for the tests: tiny SFT configs and a trainer that records the rows it trains on."""

from __future__ import annotations

from trl import SFTConfig, SFTTrainer


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
