"""Load per-domain SFT sources (Hub ids or local files), convert them to one conversational format, split eval."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import yaml
from datasets import Dataset, concatenate_datasets, load_dataset, load_from_disk

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
    """A Hub dataset id, a local data file (.json/.jsonl/.parquet/.csv) or a folder saved with `save_to_disk`."""
    if os.path.isdir(source) and os.path.exists(os.path.join(source, "dataset_info.json")):
        return load_from_disk(source)
    extension = os.path.splitext(source)[1]
    if os.path.isfile(source):
        if extension not in LOCAL_FORMATS:
            raise ValueError(f"{source}: unsupported file type {extension!r}; use one of {sorted(LOCAL_FORMATS)}.")
        return load_dataset(LOCAL_FORMATS[extension], data_files=source, split="train")
    return load_dataset(source, split=split)


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
    """Replace sources with `domain=path_or_id` strings (a new domain name adds a domain)."""
    mixture = {domain: dict(spec) for domain, spec in mixture.items()}
    for override in overrides:
        domain, separator, source = override.partition("=")
        if not separator or not domain or not source:
            raise ValueError(f"--dataset_override {override!r} must look like law=/data/law.jsonl.")
        mixture[domain] = {**mixture.get(domain, {}), "source": source}
    return mixture


def _conversation_row(row: Mapping[str, Any], domain: str) -> dict[str, Any]:
    return {"messages": to_messages(row), "domain": domain}


def build_mixture(
    mixture: Mapping[str, Mapping[str, Any]], eval_rows: int, max_train_rows: int | None, seed: int
) -> tuple[Dataset, dict[str, Dataset]]:
    """Load every domain, convert it to `{"messages", "domain"}`, hold out `eval_rows` rows per domain for eval."""
    train_parts, eval_sets = [], {}
    for domain, spec in mixture.items():
        raw = load_source(spec["source"], spec.get("split", "train"))
        converted = raw.map(
            _conversation_row,
            fn_kwargs={"domain": domain},
            remove_columns=raw.column_names,
            desc=f"Converting {domain}",
        ).shuffle(seed=seed)
        if len(converted) <= eval_rows:
            raise ValueError(f"Domain {domain!r} has {len(converted)} rows; it needs more than {eval_rows} eval rows.")
        limit = spec.get("max_rows", max_train_rows)
        train_end = len(converted) if limit is None else min(len(converted), eval_rows + int(limit))
        eval_sets[domain] = converted.select(range(eval_rows)).remove_columns("domain")
        train_parts.append(converted.select(range(eval_rows, train_end)))
    return concatenate_datasets(train_parts), eval_sets
