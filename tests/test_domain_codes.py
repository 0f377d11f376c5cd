"""Reading domain labels through Arrow: the same labels as a row-by-row read, for every way a Dataset's rows are
reordered, in a bounded amount of memory."""

import tracemalloc

import numpy as np
import pyarrow as pa
import pytest
from datasets import ClassLabel, Dataset

from versatune_hf.integrations.labels import column_labels
from versatune_hf.sampling import domain_codes
from versatune_hf.sampling.domain_codes import encode_labels

NAMES = ["code", "finance", "law", "medicine", "other", "science"]


@pytest.fixture(scope="module")
def dataset():
    rng = np.random.default_rng(0)
    labels = rng.choice(NAMES, 5000, p=[0.4, 0.1, 0.05, 0.05, 0.3, 0.1]).tolist()
    return Dataset.from_dict({"domain": labels, "id": list(range(5000))})


@pytest.mark.parametrize(
    "reorder",
    [
        lambda ds: ds,
        lambda ds: ds.shuffle(seed=3),
        lambda ds: ds.select(range(4999, -1, -3)),
        lambda ds: ds.filter(lambda row: row["id"] % 7 != 0),
        lambda ds: ds.filter(lambda row: row["domain"] != "law").shuffle(seed=1),
        lambda ds: ds.cast_column("domain", ClassLabel(names=list(reversed(NAMES)))).shuffle(seed=2),
        lambda ds: ds.select(range(10)),
    ],
    ids=["plain", "shuffled", "selected", "filtered", "domain-dropped", "class-label", "few-rows"],
)
def test_arrow_read_matches_a_row_by_row_read(dataset, reorder, monkeypatch):
    monkeypatch.setattr(domain_codes, "ENCODE_CHUNK_ROWS", 777)  # several chunks, each with its own dictionary
    reordered = reorder(dataset)
    codes = column_labels(reordered, "domain")
    feature = reordered.features["domain"]
    expected = [feature.int2str(value) if hasattr(feature, "int2str") else value for value in reordered["domain"]]
    assert codes.to_names() == expected
    assert codes.names == sorted(set(expected))
    assert codes.codes.dtype == np.int8


def test_missing_labels_are_refused():
    with pytest.raises(ValueError, match="2 rows have no domain label"):
        encode_labels(pa.array(["law", None, "code", None]))


def test_labels_of_two_million_shuffled_rows_take_two_bytes_per_row():
    """Everything the read allocates, numpy and Arrow, at its peak: the one-byte result plus one byte per physical
    row (for a shuffled table) plus a chunk's worth of Arrow buffers."""
    rows = 2_000_000
    values = pa.DictionaryArray.from_arrays(
        pa.array(np.random.default_rng(0).integers(0, 6, rows).astype(np.int32)), pa.array(NAMES)
    ).cast(pa.string())
    indices = pa.array(np.random.default_rng(1).permutation(rows).astype(np.uint64))
    pool = pa.default_memory_pool()
    arrow_before = pool.bytes_allocated()
    tracemalloc.start()
    codes = encode_labels(values, indices=indices)
    _, numpy_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    arrow_peak = pool.max_memory() - arrow_before
    assert codes.codes.nbytes == rows
    chunk_buffers = 16 * domain_codes.ENCODE_CHUNK_ROWS  # a chunk's indices as int64, and its codes
    assert numpy_peak <= 2 * rows + chunk_buffers, numpy_peak / rows
    assert arrow_peak <= chunk_buffers, arrow_peak
