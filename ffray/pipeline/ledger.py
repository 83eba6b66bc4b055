"""The record of finished chunks, per video: one small JSON object per chunk whose segment is written.

Layout, under a video's folder in the work dir (a local/shared path or any fsspec URL, e.g. s3://):

    <video_dir>/segments/<chunk_index>-<chunk_id>.<ext>   the encoded chunk
    <video_dir>/done/<chunk_index>-<chunk_id>.json        its record (sha256, size, frames, faces, seconds)

Object stores cannot append, so there is no shared log file: each record is its own object, written
whole (tmp + fsync + rename on a filesystem, a single put on an object store) after its segment, by the
driver only. Loading lists `done/` and reads every record; a record that does not parse is ignored.
Resume trusts a record only while its segment is still there with the recorded size and sha256.
Records are keyed by chunk id (content hash + frame range), so any job that processes the same video
with the same settings (the same video key, see driver.video_key) finds and reuses them.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import asdict, dataclass, fields

from ffray.media.io import sha256_and_size
from ffray.pipeline.storage import join, write_atomic

RECORDS = "done"
SEGMENTS = "segments"


@dataclass(frozen=True)
class ChunkRecord:
    video_key: str
    chunk_id: str
    chunk_index: int
    start: int
    end: int
    segment: str  # the segment's URI (on load: rebuilt from the video folder and the segment's name)
    sha256: str
    size: int  # bytes of the segment
    frames: int
    faces: int
    seconds: float  # busy seconds over all stages for this chunk

    @property
    def name(self) -> str:
        return chunk_name(self.chunk_index, self.chunk_id)


def chunk_name(chunk_index: int, chunk_id: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in chunk_id)
    return f"{chunk_index:06d}-{safe}"


class VideoLedger:
    """The finished chunks of one video key: `records` by chunk id, loaded from `<video_dir>/done/`."""

    def __init__(self, video_dir: str):
        self.video_dir = video_dir.rstrip("/")
        self.records: dict[str, ChunkRecord] = {}
        self._load()

    def segment_uri(self, chunk_index: int, chunk_id: str, ext: str) -> str:
        return join(self.video_dir, SEGMENTS, chunk_name(chunk_index, chunk_id) + ext)

    def record_uri(self, chunk_index: int, chunk_id: str) -> str:
        return join(self.video_dir, RECORDS, chunk_name(chunk_index, chunk_id) + ".json")

    def refresh(self, names: Collection[str]) -> None:
        """(Re)load the records of these chunks (chunk_name): a concurrent job may have written them."""
        self._load(set(names))

    def _load(self, names: Collection[str] | None = None) -> None:
        from ffray.media.io import split_uri

        fs, folder = split_uri(join(self.video_dir, RECORDS))
        fs.invalidate_cache(folder)  # another process (an earlier run) may have written records since
        try:
            paths = [p for p in fs.find(folder) if p.endswith(".json")]
        except FileNotFoundError:
            paths = []
        if names is not None:
            paths = [p for p in paths if p.rsplit("/", 1)[-1][:-len(".json")] in names]
        if not paths:
            return
        known = {f.name for f in fields(ChunkRecord)}
        for blob in fs.cat(paths, on_error="omit").values():
            try:
                data = json.loads(blob)
                data = {k: v for k, v in data.items() if k in known}
                rec = ChunkRecord(**data)
            except (ValueError, TypeError):
                continue  # not a record this version can use
            segment_name = rec.segment.rsplit("/", 1)[-1]
            rec = ChunkRecord(**{**asdict(rec), "segment": join(self.video_dir, SEGMENTS, segment_name)})
            self.records[rec.chunk_id] = rec

    def append(self, record: ChunkRecord) -> None:
        """Record a finished chunk (its segment is already in place)."""
        data = {**asdict(record), "segment": record.segment.rsplit("/", 1)[-1]}  # relative: the work dir may move
        write_atomic(self.record_uri(record.chunk_index, record.chunk_id),
                     (json.dumps(data, sort_keys=True) + "\n").encode())
        self.records[record.chunk_id] = record

    def verified(self, chunk_id: str) -> ChunkRecord | None:
        """The record of a finished chunk whose segment is still there, intact; else None."""
        rec = self.records.get(chunk_id)
        if rec is None:
            return None
        try:
            found = sha256_and_size(rec.segment)
        except FileNotFoundError:
            return None
        return rec if found == (rec.sha256, rec.size) else None
