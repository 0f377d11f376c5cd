"""Where the domain labels come from, and the cases where the raw dataset no longer lines up with the rows trained."""

from types import SimpleNamespace

import pytest
from datasets import ClassLabel, Dataset

from versatune_hf.integrations.labels import resolve_domain_labels

RAW = Dataset.from_dict({"text": ["a", "b", "c"], "domain": ["law", "code", "law"]})
ARGS = SimpleNamespace(packing=False, shuffle_dataset=False)


def test_prepared_dataset_with_the_column_wins():
    """TRL's prepared rows carry the label in DataLoader order, even when they were shuffled."""
    prepared = Dataset.from_dict({"input_ids": [[1], [2]], "domain": ["code", "law"]})
    assert resolve_domain_labels("domain", 2, prepared, RAW, ARGS).to_names() == ["code", "law"]


def test_raw_dataset_is_used_while_it_lines_up():
    prepared = Dataset.from_dict({"input_ids": [[1], [2], [3]]})
    assert resolve_domain_labels("domain", 3, prepared, RAW, ARGS).to_names() == ["law", "code", "law"]
    assert resolve_domain_labels("domain", 3, None, RAW, ARGS).to_names() == ["law", "code", "law"]


def test_class_label_column_gives_names():
    raw = RAW.cast_column("domain", ClassLabel(names=["code", "law"]))
    assert resolve_domain_labels("domain", 3, None, raw, ARGS).to_names() == ["law", "code", "law"]


@pytest.mark.parametrize(
    "args, loader_rows, message",
    [
        (SimpleNamespace(packing=True, shuffle_dataset=False), 3, r"packing=True.*VersaTuneSFTTrainer.*packing=False"),
        (SimpleNamespace(packing=False, shuffle_dataset=True), 3, r"shuffle_dataset=True.*Set shuffle_dataset=False"),
        (ARGS, 2, r"trains on 2 rows.*has 3.*Filter those rows out"),
    ],
)
def test_misaligned_raw_labels_are_an_error_naming_cause_and_fix(args, loader_rows, message):
    with pytest.raises(ValueError, match=message):
        resolve_domain_labels("domain", loader_rows, None, RAW, args)


def test_missing_column_and_missing_dataset_are_errors():
    with pytest.raises(ValueError, match=r"no 'topic' column.*domain_column="):
        resolve_domain_labels("topic", 3, None, RAW, ARGS)
    with pytest.raises(ValueError, match=r"VersaTuneCallback\(train_dataset=train_ds\)"):
        resolve_domain_labels("domain", 3, None, None, ARGS)
