"""`VersaTuneSFTTrainer`: TRL's `SFTTrainer` with per-domain packing, for `packing=True` runs."""

from __future__ import annotations

from typing import Any

import numpy as np
from datasets import Dataset, concatenate_datasets
from transformers.trainer_utils import TrainOutput, get_last_checkpoint
from trl import SFTTrainer

from .callback import VersaTuneCallback
from .checkpoint import check_trainer_state_file
from .labels import column_labels


class VersaTuneSFTTrainer(SFTTrainer):
    """An `SFTTrainer` that, with `packing=True`, packs each domain on its own.

    TRL's packing concatenates rows of different domains and drops every column but the token ids, so a packed row
    has no domain. Here the train set is split by its domain column, each part is prepared and packed by TRL exactly
    as usual, and the packed rows get their domain back; the `VersaTuneCallback` then weighs packed rows like any
    other. Without packing (or for eval sets, which hold one domain each) it is `SFTTrainer` unchanged.

    The domain column is the one configured on the `VersaTuneCallback` in `callbacks` (`"domain"` by default), and
    every `VersaTuneCallback` in `callbacks` is attached to this trainer.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        callbacks = [c for c in kwargs.get("callbacks") or [] if isinstance(c, VersaTuneCallback)]
        self.domain_column = callbacks[0].config.domain_column if callbacks else "domain"
        super().__init__(*args, **kwargs)
        for callback in callbacks:
            callback.attach(self)

    def train(self, resume_from_checkpoint: str | bool | None = None, *args: Any, **kwargs: Any) -> TrainOutput:
        """`SFTTrainer.train`; a damaged `trainer_state.json` in the checkpoint is named before the Trainer reads."""
        checkpoint = resume_from_checkpoint
        if checkpoint is True:
            checkpoint = get_last_checkpoint(self.args.output_dir)
        if isinstance(checkpoint, str):
            check_trainer_state_file(checkpoint)
        return super().train(resume_from_checkpoint, *args, **kwargs)

    def _prepare_dataset(self, dataset, processing_class, args, packing, formatting_func, dataset_name):
        if not packing or not isinstance(dataset, Dataset) or self.domain_column not in dataset.column_names:
            return super()._prepare_dataset(dataset, processing_class, args, packing, formatting_func, dataset_name)
        labels = column_labels(dataset, self.domain_column)
        packed_domains = []
        for code, domain in enumerate(labels.names):
            rows = np.flatnonzero(labels.codes == code)
            packed = super()._prepare_dataset(
                dataset.select(rows), processing_class, args, packing, formatting_func, f"{dataset_name} [{domain}]"
            )
            packed_domains.append(packed.add_column(self.domain_column, [domain] * len(packed)))
        return concatenate_datasets(packed_domains)
