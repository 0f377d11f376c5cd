"""Load per-domain SFT sources (Hub ids or local files), convert them to one conversational format, split eval."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import yaml
from datasets import Dataset, DatasetDict, concatenate_datasets, load_dataset, load_from_disk

from ..integrations.labels import rows_by_domain
from ..utils.logs import get_logger

logger = get_logger(__name__)

PAPER_SOURCES = {
    "law": "Alignment-Lab-AI/Lawyer-Instruct",
    "medicine": "medalpaca/medical_meadow_medqa",
    "finance": "gbharti/finance-alpaca",
    "science": "jeffmeloy/sonnet3.5_science_conversations",
    "code": "sahil2801/CodeAlpaca-20k",
    "other": "tatsu-lab/alpaca",
}
"""The SFT data of the VersaTune paper, one Hub dataset per domain (sizes in docs/method notes)."""

ROLE_NAMES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
LOCAL_FORMATS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv", ".txt": "text"}


def to_messages(row: Mapping[str, Any]) -> list[dict[str, str]]:
    """One conversation from the common SFT schemas: `messages` (role/content), `conversations` or `conversation`
    (ShareGPT from/value or role/content), Alpaca `instruction`/`input`/`output`, `prompt`/`completion` or
    `question`/`answer`."""
    for key in ("messages", "conversations", "conversation"):
        if key in row and row[key]:
            turns = []
            for turn in row[key]:
                role = turn.get("role", turn.get("from"))
                content = turn.get("content", turn.get("value"))
                if role not in ROLE_NAMES or content is None:
                    raise ValueError(
                        f"Unrecognised turn {turn!r} in column {key!r}: expected role/content or from/value."
                    )
                turns.append({"role": ROLE_NAMES[role], "content": str(content)})
            return turns
    if "instruction" in row and "output" in row:
        prompt = str(row["instruction"]).strip()
        if row.get("input"):
            prompt = f"{prompt}\n\n{str(row['input']).strip()}"
        return [{"role": "user", "content": prompt}, {"role": "assistant", "content": str(row["output"])}]
    for prompt_key, answer_key in (("prompt", "completion"), ("question", "answer")):
        if prompt_key in row and answer_key in row:
            return [
                {"role": "user", "content": str(row[prompt_key])},
                {"role": "assistant", "content": str(row[answer_key])},
            ]
    raise ValueError(
        f"Cannot convert a row with columns {sorted(row)} to a conversation. Supported: messages, conversations, "
        "instruction/input/output, prompt/completion, question/answer."
    )


def load_source(source: str, split: str = "train") -> Dataset:
    """One split of a Hub dataset id (only that split is downloaded), a local data file (.json/.jsonl/.parquet/.csv)
    or a folder (data files, or saved with `save_to_disk`)."""
    if not os.path.exists(source):
        return load_dataset(source, split=split)
    splits = load_splits(source)
    if split not in splits:
        raise ValueError(f"{source} has no split {split!r}; its splits are {sorted(splits)}.")
    return splits[split]


def load_splits(source: str, config: str | None = None) -> DatasetDict:
    """Every split of a Hub dataset id, a local data file (one `train` split) or a folder (data files such as
    `train.jsonl`/`test.jsonl`, or a `save_to_disk` folder)."""
    if os.path.isdir(source) and any(
        os.path.exists(os.path.join(source, name)) for name in ("dataset_info.json", "dataset_dict.json")
    ):
        saved = load_from_disk(source)
        return saved if isinstance(saved, DatasetDict) else DatasetDict(train=saved)
    if os.path.isfile(source):
        extension = os.path.splitext(source)[1]
        if extension not in LOCAL_FORMATS:
            raise ValueError(f"{source}: unsupported file type {extension!r}; use one of {sorted(LOCAL_FORMATS)}.")
        return load_dataset(LOCAL_FORMATS[extension], data_files=source)
    return load_dataset(source, name=config)


def mixture_from_dataset(
    source: str, config: str | None, column: str, train_split: str, test_split: str
) -> dict[str, dict[str, Any]]:
    """The domains of one dataset with a domain column: `{domain: {"dataset": train rows, "eval_dataset": test
    rows}}`, the test rows only where the dataset has `test_split` (otherwise eval rows are held out of train)."""
    splits = load_splits(source, config)
    if train_split not in splits:
        raise ValueError(f"{source} has no split {train_split!r} (--dataset_train_split); it has {sorted(splits)}.")
    train = splits[train_split]
    if column not in train.column_names:
        raise ValueError(
            f"{source} has no '{column}' column to tell the domains apart (columns: {train.column_names}). Add one, "
            "or name the column that holds each row's domain with --versatune_domain_column."
        )
    test = splits[test_split] if test_split in splits else None
    if test is not None and column not in test.column_names:
        raise ValueError(f"The {test_split!r} split of {source} has no '{column}' column; its rows need a domain.")
    test_rows = {} if test is None else rows_by_domain(test, column)
    train_rows = rows_by_domain(train, column)
    unknown = sorted(set(test_rows) - set(train_rows))
    if unknown:
        logger.warning(
            f"The {test_split!r} split of {source} has domains {unknown} that train has not; ignoring them."
        )
    mixture = {}
    for domain, rows in train_rows.items():
        mixture[domain] = {"dataset": rows}
        if test is not None:
            mixture[domain]["eval_dataset"] = test_rows.get(domain, test.select([]))
    return mixture


def read_mixture(path: str) -> dict[str, dict[str, Any]]:
    """A mixture YAML: `{domain: source}` or `{domain: {source: ..., split: ..., max_rows: ...}}`."""
    with open(path, encoding="utf-8") as handle:
        raw = yaml.safe_load(handle)
    if not isinstance(raw, dict) or not raw:
        raise ValueError(f"{path} must map domain names to sources, e.g. 'law: Alignment-Lab-AI/Lawyer-Instruct'.")
    mixture = {}
    for domain, spec in raw.items():
        spec = {"source": spec} if isinstance(spec, str) else dict(spec)
        if "source" not in spec:
            raise ValueError(f"{path}: domain {domain!r} has no 'source'.")
        mixture[str(domain)] = spec
    return mixture


def apply_overrides(mixture: dict[str, dict[str, Any]], overrides: list[str]) -> dict[str, dict[str, Any]]:
    """Replace sources with `domain=path_or_id` strings (a new domain name adds a domain; a domain named twice is an
    error)."""
    mixture = {domain: dict(spec) for domain, spec in mixture.items()}
    seen = set()
    for override in overrides:
        domain, separator, source = override.partition("=")
        if not separator or not domain or not source:
            raise ValueError(f"--dataset_override {override!r} must look like law=/data/law.jsonl.")
        if domain in seen:
            raise ValueError(f"--dataset_override names domain {domain!r} twice; give each domain one source.")
        seen.add(domain)
        kept = {key: value for key, value in mixture.get(domain, {}).items() if key in ("split", "max_rows")}
        mixture[domain] = {**kept, "source": source}  # replaces the rows and test rows a --dataset_name gave
    return mixture


def build_mixture(
    mixture: Mapping[str, Mapping[str, Any]], eval_rows: int, max_train_rows: int | None, seed: int, column: str
) -> tuple[Dataset, dict[str, Dataset]]:
    """Load every domain (its `source`, or the rows in `dataset`), convert it to `{"messages", column}`, and hold out
    `eval_rows` rows per domain for eval, unless the domain brings its own `eval_dataset`."""
    train_parts, eval_sets = [], {}
    for domain, spec in mixture.items():
        raw = spec["dataset"] if "dataset" in spec else load_source(spec["source"], spec.get("split", "train"))
        converted = _converted(raw, domain, column, seed)
        limit = spec.get("max_rows", max_train_rows)
        if "eval_dataset" in spec:
            held_out = _converted(spec["eval_dataset"], domain, column, seed)
            if len(held_out) == 0:
                raise ValueError(f"The test split has no rows of domain {domain!r}; every domain needs eval rows.")
        else:
            if len(converted) <= eval_rows:
                raise ValueError(
                    f"Domain {domain!r} has {len(converted)} rows; it needs more than {eval_rows} eval rows."
                )
            held_out, converted = (
                converted.select(range(eval_rows)),
                converted.select(range(eval_rows, len(converted))),
            )
        train_parts.append(converted if limit is None else converted.select(range(min(len(converted), int(limit)))))
        eval_sets[domain] = held_out.remove_columns(column)
    return concatenate_datasets(train_parts), eval_sets


def _converted(raw: Dataset, domain: str, column: str, seed: int) -> Dataset:
    """`raw` as shuffled `{"messages", column}` rows."""
    return raw.map(
        _conversation_row,
        fn_kwargs={"domain": domain, "column": column},
        remove_columns=raw.column_names,
        desc=f"Converting {domain}",
    ).shuffle(seed=seed)


def _conversation_row(row: Mapping[str, Any], domain: str, column: str) -> dict[str, Any]:
    return {"messages": to_messages(row), column: domain}
