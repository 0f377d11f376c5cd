"""`versatune_history.jsonl`: one complete JSON line per weight update, durable across crashes and resumes."""

from __future__ import annotations

import json
import os
from typing import Any


class HistoryFile:
    """Appends one JSON object per line and forces it to disk, so a killed run loses at most the line being written."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.fspath(path)

    def start(self, resume_step: int) -> None:
        """Begin a run: a fresh run (`resume_step == 0`) empties the file; a resumed one keeps the records up to its
        checkpoint's step and drops later ones (and a torn last line), since training repeats those steps."""
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        kept = [record for record in self.read() if record["step"] <= resume_step] if resume_step > 0 else []
        with open(self.path, "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(record) + "\n" for record in kept)
            handle.flush()
            os.fsync(handle.fileno())

    def append(self, record: dict[str, Any]) -> None:
        """Write `record` as one line and fsync it."""
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
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
