"""Domain labels as small integer codes, read through Arrow: one byte per row instead of one Python string."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

ENCODE_CHUNK_ROWS = 1 << 18
"""Rows encoded at a time: keeps Arrow's transient int32 dictionary indices to a few MiB whatever the table size."""


class DomainCodes(NamedTuple):
    """The domain of every row as a code into `names` (sorted distinct domain names)."""

    codes: np.ndarray
    names: list[str]

    def to_names(self) -> list[str]:
        """The domain name of every row (one Python string per row: for small sets and tests)."""
        return np.array(self.names, dtype=object)[self.codes].tolist() if self.names else []

    def counts(self) -> dict[str, int]:
        """Rows per domain, in `names` order."""
        return dict(zip(self.names, count_codes(self.codes, len(self.names)).tolist()))


def count_codes(codes: np.ndarray, num_codes: int) -> np.ndarray:
    """How many times each code in `range(num_codes)` occurs, a chunk at a time (`np.bincount` alone first widens the
    whole array to 8-byte integers)."""
    counts = np.zeros(num_codes, dtype=np.int64)
    for start in range(0, codes.size, ENCODE_CHUNK_ROWS):
        counts += np.bincount(codes[start : start + ENCODE_CHUNK_ROWS], minlength=num_codes)
    return counts


def code_dtype(num_domains: int) -> np.dtype:
    """The smallest signed integer type that holds `num_domains` codes and -1 (unknown)."""
    return np.dtype(np.int8 if num_domains < 2**7 else np.int16 if num_domains < 2**15 else np.int32)


def encode_labels(
    values: pa.Array | pa.ChunkedArray,
    label_names: Sequence[str] | None = None,
    indices: pa.Array | pa.ChunkedArray | None = None,
) -> DomainCodes:
    """Encode a column of domain labels without building one Python object per row.

    Args:
        values: The column: strings (or anything Arrow casts to strings), or integer class ids when `label_names`
            is given (a `datasets.ClassLabel` column).
        label_names: The name of each class id.
        indices: Optional row order: the result's row `i` is `values[indices[i]]` (a `datasets.Dataset` that was
            shuffled, selected or filtered keeps its table and such an indices mapping).

    Raises:
        ValueError: if a label is missing (null).
    """
    values = values if isinstance(values, pa.ChunkedArray) else pa.chunked_array([values])
    if values.null_count:
        raise ValueError(
            f"{values.null_count} rows have no domain label (null). Give every train row a domain, or drop those rows."
        )
    if label_names is None:
        if not pa.types.is_string(values.type) and not pa.types.is_large_string(values.type):
            values = values.cast(pa.string())
        present = sorted(pc.unique(values).to_pylist())
    else:
        used = np.zeros(len(label_names), dtype=np.int64)
        for part in _slices(values):
            used += np.bincount(part.to_numpy(zero_copy_only=False), minlength=len(label_names))
        present = sorted(str(label_names[index]) for index in np.flatnonzero(used))
    dtype = code_dtype(len(present))
    code_of = {name: code for code, name in enumerate(present)}
    if label_names is None:

        def codes_of(part: pa.Array) -> np.ndarray:
            encoded = part.dictionary_encode()
            lookup = np.array([code_of[name] for name in encoded.dictionary.to_pylist()], dtype=dtype)
            return lookup[encoded.indices.to_numpy(zero_copy_only=False)]

    else:
        class_codes = np.array([code_of.get(str(name), -1) for name in label_names], dtype=dtype)

        def codes_of(part: pa.Array) -> np.ndarray:
            return class_codes[part.to_numpy(zero_copy_only=False)]

    physical = _map_chunks(values, codes_of, dtype)
    if indices is None:
        return DomainCodes(physical, present)
    indices = indices if isinstance(indices, pa.ChunkedArray) else pa.chunked_array([indices])
    codes = _map_chunks(indices, lambda part: physical[part.to_numpy(zero_copy_only=False)], dtype)
    counts = count_codes(codes, len(present))
    if counts.size and not counts.all():  # a selection may leave some domains out
        return _drop_absent(codes, present, counts)
    return DomainCodes(codes, present)


def encode_label_list(labels: Sequence[Any]) -> DomainCodes:
    """Encode a Python sequence (or numpy array) of domain names."""
    if isinstance(labels, np.ndarray):
        values = pa.array(labels.astype(str) if labels.dtype.kind != "U" else labels)
    else:
        values = pa.array([str(label) for label in labels], type=pa.string())
    return encode_labels(values)


def _drop_absent(codes: np.ndarray, names: list[str], counts: np.ndarray) -> DomainCodes:
    kept = np.flatnonzero(counts)
    renumber = np.full(len(names), -1, dtype=codes.dtype)
    renumber[kept] = np.arange(len(kept), dtype=codes.dtype)
    return DomainCodes(renumber[codes], [names[index] for index in kept])


def _map_chunks(column: pa.ChunkedArray, convert: Callable[[pa.Array], np.ndarray], dtype: np.dtype) -> np.ndarray:
    """`convert` applied to `column` a slice at a time, into one preallocated array."""
    result = np.empty(len(column), dtype=dtype)
    start = 0
    for part in _slices(column):
        result[start : start + len(part)] = convert(part)
        start += len(part)
    return result


def _slices(column: pa.ChunkedArray):
    for chunk in column.chunks:
        for start in range(0, len(chunk), ENCODE_CHUNK_ROWS):
            yield chunk.slice(start, ENCODE_CHUNK_ROWS)
