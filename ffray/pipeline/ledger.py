"""The job's record of finished chunks: `ledger.jsonl`, one JSON line per chunk whose segment is written.

Only the driver appends (one writer, so no locking); each line is flushed and fsynced before the
chunk counts as done. A torn last line (driver killed mid-write) is ignored on load. Resume trusts a
line only while its segment file still exists and hashes to the recorded sha256.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class ChunkRecord:
    video_id: str
    chunk_id: str
    chunk_index: int
    start: int
    end: int
    segment: str  # path of the segment file
    sha256: str
    frames: int
    faces: int
    seconds: float  # busy seconds over all stages for this chunk


class Ledger:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.records: dict[str, ChunkRecord] = {}
        self._torn_tail = False
        if self.path.exists():
            text = self.path.read_text()
            self._torn_tail = bool(text) and not text.endswith("\n")
            for line in text.splitlines():
                try:
                    rec = ChunkRecord(**json.loads(line))
                except (ValueError, TypeError):
                    continue  # a line torn by a killed driver
                self.records[rec.chunk_id] = rec

    def append(self, record: ChunkRecord) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            if self._torn_tail:  # never glue a new record onto a half-written one
                f.write("\n")
                self._torn_tail = False
            f.write(json.dumps(asdict(record), sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.records[record.chunk_id] = record

    def verified(self, chunk_id: str) -> ChunkRecord | None:
        """The record of a finished chunk whose segment is still there, intact; else None."""
        rec = self.records.get(chunk_id)
        if rec is None or not os.path.isfile(rec.segment):
            return None
        from ffray.media.encode import file_sha256

        if file_sha256(rec.segment) != rec.sha256:
            return None
        return rec
