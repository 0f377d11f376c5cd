"""`versatune_history.jsonl`: one JSON line per weight update, owned by one run at a time and never silently lost."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..utils.logs import get_logger

logger = get_logger(__name__)


@dataclass
class HistoryRead:
    """What a history file holds: its complete records, and the 1-based numbers of the lines that are not."""

    records: list[dict[str, Any]]
    damaged_lines: list[int]


def read_history_file(path: str | os.PathLike) -> HistoryRead:
    """Read every complete record of a JSON-lines history file; damaged lines are reported, not dropped silently."""
    records, damaged = [], []
    if not os.path.exists(path):
        return HistoryRead(records, damaged)
    with open(path, encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                damaged.append(number)
                continue
            if isinstance(record, dict) and isinstance(record.get("step"), int):
                records.append(record)
            else:
                damaged.append(number)
    return HistoryRead(records, damaged)


def write_atomically(path: str, records: Iterable[dict[str, Any]]) -> None:
    """Replace `path` with `records` through a temporary file and `os.replace`: a kill leaves the old or the new file,
    never a part of either."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    temporary = f"{path}.tmp-{os.getpid()}"
    try:
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


class UpdateHistory:
    """The update history of one run.

    Only the writing process (the world's process zero) touches the file; the others keep the count. Records are
    appended whole: with `buffered=True` (the `odm` strategy, one record per round) they are kept in memory and
    written, fsynced, at every checkpoint and at train end, otherwise each record is written and fsynced at once.
    A write that fails (a full disk) is cut back to the last complete line before the error is raised. A run that
    finds its file replaced by another run's (two live runs in one `output_dir`) stops with an error instead of
    interleaving records.

    Args:
        path (`str`):
            The history file, `output_dir/<history_file>`.
        is_writer (`bool`):
            Whether this process writes the file.
        buffered (`bool`):
            Whether records wait for `flush()`.
    """

    def __init__(self, path: str, is_writer: bool, buffered: bool) -> None:
        self.path = os.path.abspath(path)
        self.is_writer = is_writer
        self.buffered = buffered
        self.records = 0
        self._pending: list[str] = []
        self._identity: tuple[int, int] | None = None

    # ------------------------------------------------------------------ opening

    def start_fresh(self) -> None:
        """Start an empty history; a previous run's file is moved aside (`<name>.<n>.jsonl`), never overwritten."""
        if not self.is_writer:
            return
        if os.path.exists(self.path) and os.path.getsize(self.path) > 0:
            archived = self._free_archive_name()
            os.replace(self.path, archived)
            logger.warning(
                f"{self.path} held the update history of an earlier run; it was moved to {archived} and this run "
                "starts a new history."
            )
        self._own([])

    def resume(self, step: int, saved: dict[str, Any] | None) -> None:
        """Keep the records up to `step` (the checkpoint's), taken from this file or, when the checkpoint was written
        by a run in another folder, from that run's file; later records are dropped, since training repeats them.

        `saved` is what `state_dict()` stored in the checkpoint (the number of records and the file they were in).
        """
        expected = None if saved is None else saved.get("records")
        read = read_history_file(self.path) if self.is_writer else HistoryRead([], [])
        kept = [record for record in read.records if record["step"] <= step]
        source = self.path
        origin = None if saved is None else saved.get("path")
        if self.is_writer and expected is not None and len(kept) < expected and origin and origin != self.path:
            if os.path.exists(origin):
                read = read_history_file(origin)
                kept, source = [record for record in read.records if record["step"] <= step], origin
        self.records = len(kept) if self.is_writer else (expected or 0)
        if not self.is_writer:
            return
        if read.damaged_lines:
            shutil.copyfile(source, self.path + ".damaged")
            logger.warning(
                f"The update history {source} has damaged lines {read.damaged_lines} (line {read.damaged_lines[0]} "
                f"first); a copy is kept at {self.path}.damaged and the {len(kept)} complete records up to step "
                f"{step} are kept."
            )
        if expected is not None and len(kept) != expected:
            logger.warning(
                f"The checkpoint at step {step} was saved after {expected} update records, but {len(kept)} were "
                f"found in {source}; the history continues from those."
            )
        self._own(kept)

    # ------------------------------------------------------------------ writing

    def append(self, record: dict[str, Any]) -> None:
        """Add one record (written at once unless buffered)."""
        self.records += 1
        if not self.is_writer:
            return
        self._pending.append(json.dumps(record, ensure_ascii=False) + "\n")
        if not self.buffered:
            self.flush()

    def flush(self) -> None:
        """Write the waiting records and fsync them; on failure cut the file back to its last complete line."""
        if not self._pending:
            return
        if self._identity is not None and _identity(self.path) != self._identity:
            raise RuntimeError(
                f"{self.path} was replaced by another training run writing to the same folder. Give each run its own "
                "output_dir (or history_file)."
            )
        data = "".join(self._pending).encode("utf-8")
        with open(self.path, "ab") as handle:
            size = handle.seek(0, os.SEEK_END)
            try:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            except OSError as error:
                handle.truncate(size)
                raise OSError(
                    error.errno,
                    f"Could not write {len(self._pending)} update records to {self.path} ({error.strerror}); the file "
                    "was cut back to its last complete record.",
                ) from error
        self._pending = []

    def close(self) -> None:
        """Write what is waiting; the file is then left to the next run."""
        if self.is_writer:
            self.flush()
        self._identity = None

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint needs to find this history again: the number of records and the file."""
        return {"records": self.records, "path": self.path}

    # ------------------------------------------------------------------ helpers

    def _free_archive_name(self) -> str:
        stem, extension = os.path.splitext(self.path)
        number = 1
        while os.path.exists(f"{stem}.{number}{extension}"):
            number += 1
        return f"{stem}.{number}{extension}"

    def _own(self, records: list[dict[str, Any]]) -> None:
        write_atomically(self.path, records)
        self._identity = _identity(self.path)


def _identity(path: str) -> tuple[int, int] | None:
    """The file's device and inode: what changes when another process replaces it."""
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    return stat.st_dev, stat.st_ino
