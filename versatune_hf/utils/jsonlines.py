"""Durable JSON-lines files: the update history and the detection samples."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from typing import Any


class JsonLinesFile:
    """One JSON object per line, each written whole and fsynced, so a killed process loses at most the line being
    written; reading skips a last line cut short by such a kill."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.fspath(path)

    def append(self, record: dict[str, Any]) -> None:
        """Write `record` as one line and fsync it."""
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def repair(self) -> None:
        """Cut off a last line that a kill left without its newline, so that appending continues cleanly."""
        if not os.path.exists(self.path):
            return
        with open(self.path, "rb+") as handle:
            content = handle.read()
            if content and not content.endswith(b"\n"):
                handle.truncate(content.rfind(b"\n") + 1)

    def rewrite(self, records: Iterable[dict[str, Any]]) -> None:
        """Replace the file's content with `records` (creating its folder if needed)."""
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        with open(self.path, "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
            handle.flush()
            os.fsync(handle.fileno())

    def read(self) -> list[dict[str, Any]]:
        """All complete records; a last line cut short by a crash is skipped."""
        if not os.path.exists(self.path):
            return []
        records = []
        with open(self.path, encoding="utf-8") as handle:
            for line in handle:
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:
                    break
        return records
