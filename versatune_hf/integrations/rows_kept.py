"""How many train and eval rows of each domain survived the trainer's preparation, said at train start.

TRL drops every example that truncation to `max_length` leaves without a single trained token (a prompt that fills
`max_length` alone). A domain of long prompts can lose most of its rows that way, and VersaTune would then weigh the
few rows left, steered by the eval loss of the few eval rows left, without a word. `report_rows_kept` logs rows given
and kept per domain and warns, naming the cause, where a domain lost a large share.
"""

from __future__ import annotations

from typing import Any

import datasets

from ..utils.logs import get_logger
from .labels import column_labels, has_column

logger = get_logger(__name__)

LARGE_LOSS_SHARE = 0.1
"""A domain that lost this share of its train or eval rows or more gets a warning."""

RowCounts = dict[str, tuple[int, int]]
"""`{domain: (rows given, rows kept)}`."""


def trl_may_drop_rows(args: Any) -> bool:
    """Whether TRL's preparation filters rows: it truncates to `max_length`, then drops rows without a trained token
    (not when packing, which chunks instead)."""
    return getattr(args, "max_length", None) is not None and not getattr(args, "packing", False)


def train_rows(given_dataset: Any, prepared_dataset: Any, kept: dict[str, int], column: str, args: Any) -> RowCounts:
    """Train rows given and kept per domain. Given: the dataset handed to the callback, else the prepared dataset's
    table before TRL's filter (its rows are the given ones: TRL writes a new table, then filters it)."""
    given = dict(kept)
    if trl_may_drop_rows(args):
        if isinstance(given_dataset, datasets.Dataset) and has_column(given_dataset, column):
            given = column_labels(given_dataset, column).counts()
        elif isinstance(prepared_dataset, datasets.Dataset) and has_column(prepared_dataset, column):
            given = column_labels(prepared_dataset, column, before_selection=True).counts()
    names = dict.fromkeys([*given, *kept])
    return {name: (max(given.get(name, 0), kept.get(name, 0)), kept.get(name, 0)) for name in names}


def eval_rows(eval_sets: dict[str, Any], column: str, args: Any) -> RowCounts:
    """Eval rows given and kept per set of a dict of prepared eval sets: the rows of each set's table before TRL's
    filter (counted by domain where the sets were split from one set with the domain column)."""
    counts = {}
    for name, rows in eval_sets.items():
        kept = given = len(rows)
        if trl_may_drop_rows(args) and isinstance(rows, datasets.Dataset):
            if has_column(rows, column):
                given = column_labels(rows, column, before_selection=True).counts().get(name, kept)
            else:
                given = rows.data.num_rows
        counts[name] = (max(given, kept), kept)
    return counts


def report_rows_kept(train: RowCounts, evaluation: RowCounts, args: Any) -> None:
    """Log rows given and kept per domain; warn for every domain that lost `LARGE_LOSS_SHARE` of its rows or more."""
    logger.info(
        "VersaTune rows per domain, given -> kept: train "
        + ", ".join(f"{name} {given}->{kept}" for name, (given, kept) in train.items())
        + "; eval "
        + ", ".join(f"{name} {given}->{kept}" for name, (given, kept) in evaluation.items())
    )
    losses = [
        f"{name}: {given - kept} of {given} {kind} rows ({(given - kept) / given:.0%})"
        for kind, counts in (("train", train), ("eval", evaluation))
        for name, (given, kept) in counts.items()
        if given > 0 and (given - kept) / given >= LARGE_LOSS_SHARE
    ]
    if losses:
        logger.warning(
            f"The trainer dropped many rows while preparing the data ({'; '.join(losses)}): TRL drops every example "
            f"that truncation to max_length={getattr(args, 'max_length', None)} "
            f"(truncation_mode={getattr(args, 'truncation_mode', 'keep_start')!r}) leaves without a trained token, "
            "such as a prompt that fills max_length alone. VersaTune weighs and evaluates only the rows kept, so a "
            "domain's share now falls on few rows and its eval loss rests on few rows. Raise max_length, or shorten "
            "or drop those prompts before training."
        )
