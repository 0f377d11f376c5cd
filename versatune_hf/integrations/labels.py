"""Find each train row's domain in the order the Trainer's DataLoader reads the rows."""

from __future__ import annotations

from typing import Any

import datasets
import numpy as np

from ..sampling.domain_codes import DomainCodes, encode_label_list, encode_labels

FIX_PASS_DATASET = (
    "Pass the train dataset with its domain column to the callback: VersaTuneCallback(train_dataset=train_ds)."
)


def column_labels(dataset: Any, column: str, before_selection: bool = False) -> DomainCodes:
    """The values of `column` as domain codes (a `ClassLabel` column gives its label names).

    A `datasets.Dataset` is read through its Arrow table, also when it was shuffled, selected or filtered (its
    indices mapping is applied to one byte per row): about 0.02 µs and 2 bytes per row, where a Python list of the
    labels costs microseconds and dozens of bytes per row. Other datasets are read row by row.

    With `before_selection=True` a `datasets.Dataset`'s indices mapping is not applied: the labels of every row of its
    table, including rows that a `filter` or `select` left out (TRL's preparation writes a new table, then filters).
    """
    feature = (getattr(dataset, "features", None) or {}).get(column)
    names = getattr(feature, "names", None) if hasattr(feature, "int2str") else None
    if isinstance(dataset, datasets.Dataset):
        indices = None if before_selection else dataset._indices  # the rows kept, in order; no public accessor
        return encode_labels(dataset.data.column(column), names, None if indices is None else indices.column(0))
    values = dataset[column]
    if names is not None:
        return encode_label_list([names[int(value)] for value in values])
    return encode_label_list(values)


def rows_by_domain(dataset: datasets.Dataset, column: str) -> dict[str, datasets.Dataset]:
    """`{domain: its rows}` of a dataset with a domain `column`, in domain-name order, each in the dataset's order."""
    labels = column_labels(dataset, column)
    return {name: dataset.select(np.flatnonzero(labels.codes == code)) for code, name in enumerate(labels.names)}


def packing_error(column: str) -> ValueError:
    """The error for TRL's `packing=True`, whose packed rows mix domains and lose the domain column."""
    return ValueError(
        "SFTConfig(packing=True) packs rows of different domains together and drops the "
        f"'{column}' column, so VersaTune cannot tell which domain a packed row belongs to. Use "
        "versatune_hf.VersaTuneSFTTrainer instead of SFTTrainer (it packs each domain on its own), or set "
        "packing=False (padding_free=True keeps most of packing's speed)."
    )


def has_column(dataset: Any, column: str) -> bool:
    """Whether `dataset` is a table-like dataset with `column`."""
    return dataset is not None and column in (getattr(dataset, "column_names", None) or [])


def resolve_domain_labels(
    column: str, loader_rows: int, prepared_dataset: Any, user_dataset: Any, args: Any
) -> DomainCodes:
    """Return the domain of every row the train DataLoader reads, or raise if they cannot be known for sure.

    `prepared_dataset` is the Trainer's `train_dataset` (TRL's tokenized copy): when it still has the domain column,
    its rows are exactly the DataLoader's, even after TRL shuffles or filters them. Otherwise the user's raw dataset
    is used, which lines up with the DataLoader only while TRL keeps every row in order; the cases where it does not
    are errors, never a silently misweighted mixture.
    """
    if has_column(prepared_dataset, column) and len(prepared_dataset) == loader_rows:
        return column_labels(prepared_dataset, column)
    if getattr(args, "packing", False):
        raise packing_error(column)
    if user_dataset is None:
        raise ValueError(
            f"The train dataset the Trainer uses has no '{column}' column. {FIX_PASS_DATASET} Or set "
            "domain_column= to the column that holds the domains."
        )
    if not has_column(user_dataset, column):
        columns = getattr(user_dataset, "column_names", None)
        raise ValueError(
            f"The train dataset has no '{column}' column (columns: {columns}). Add a column with each row's domain "
            "name, or set domain_column= to the column that holds it."
        )
    if getattr(args, "shuffle_dataset", False):
        raise ValueError(
            "SFTConfig(shuffle_dataset=True) reorders the rows after tokenization, so the domain labels of the "
            "dataset given to VersaTuneCallback no longer line up with the rows trained. Set shuffle_dataset=False: "
            "the VersaTune sampler already draws rows in a random order."
        )
    if len(user_dataset) != loader_rows:
        raise ValueError(
            f"The Trainer trains on {loader_rows} rows but the dataset given to VersaTuneCallback has "
            f"{len(user_dataset)}: rows were dropped during preparation (TRL drops examples whose completion is "
            "truncated away entirely), so labels cannot be matched to rows. Filter those rows out before building "
            "the trainer (or raise max_length) so that every row is kept."
        )
    return column_labels(user_dataset, column)
