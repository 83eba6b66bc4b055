"""The job's chunk plan as a Ray Data source: one ReadTask per chunk, whose read decodes the chunk and
yields ONE row. A row is a chunk so that one writer encodes one chunk in one go (bit-identical segments
after any crash), and because the source is a real Read, Ray's checkpointing could apply to it.

Row columns: `video_key`, `chunk_id`, `chunk_index`, `start`, `end` (frame range, end exclusive),
`frames` uint8 (N, H, W, 3) BGR in coded orientation, `frame_index` (N,), `pts` (N,), `error` ("" when
fine), and the read stage's accounting columns (see stages.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from ray.data.block import BlockAccessor, BlockMetadata
from ray.data.datasource import Datasource, ReadTask

from ffray.pipeline.stages import error_kind, error_text


@dataclass(frozen=True)
class ChunkTask:
    video_key: str
    uri: str
    chunk: Any  # ffray.media.Chunk: everything decode_chunk needs, so the read never re-probes
    frame_bytes: int  # H * W * 3 of the decoded frames, for Ray's size estimates


def decode_chunk_row(task: ChunkTask) -> dict[str, Any]:
    """The single row of one chunk (a batch of one), or the same keys with `error` set."""
    from ffray.media import decode_chunk

    chunk = task.chunk
    expected = chunk.end - chunk.start
    started = time.perf_counter()
    error = kind = ""
    images: list[np.ndarray] = []
    indices: list[int] = []
    pts: list[int] = []
    try:
        for frame in decode_chunk(task.uri, chunk):
            images.append(frame.image)
            indices.append(frame.index)
            pts.append(frame.pts)
        if len(images) != expected or (indices and (indices[0] != chunk.start or indices[-1] != chunk.end - 1)):
            got = f"{indices[0]}-{indices[-1]}" if indices else "none"
            error = (f"{task.uri}: frames {chunk.start}-{chunk.end - 1}: decoded {len(images)} of "
                     f"{expected} frames (got {got}); the file is corrupt or truncated in that range")
            kind = "input"
    except Exception as exc:  # a corrupt region fails the video, not the job
        error, kind = error_text(exc), error_kind(exc)
    if error:
        frames = np.zeros((0, 1, 1, 3), np.uint8)
        indices, pts = [], []
    else:
        frames = np.stack(images)
    row = {
        "video_key": np.array([task.video_key], dtype=object),
        "chunk_id": np.array([chunk.id], dtype=object),
        "chunk_index": np.array([chunk.index], dtype=np.int64),
        "start": np.array([chunk.start], dtype=np.int64),
        "end": np.array([chunk.end], dtype=np.int64),
        "error": np.array([error], dtype=object),
        "error_kind": np.array([kind], dtype=object),
        "frames": frames[None],
        "frame_index": np.array(indices, dtype=np.int64)[None],
        "pts": np.array(pts, dtype=np.int64)[None],
        "read_s": np.array([time.perf_counter() - started]),
        "read_calls": np.array([1.0]),
        "read_in": np.array([0], dtype=np.int64),
    }
    row["read_out"] = np.array([sum(np.asarray(v).nbytes for v in row.values()) + 8], dtype=np.int64)
    return row


class ChunkDatasource(Datasource):
    def __init__(self, tasks: list[ChunkTask]):
        super().__init__()
        self.tasks = list(tasks)

    def get_name(self) -> str:
        return "Chunks"

    def estimate_inmemory_data_size(self) -> int:
        return sum((t.chunk.end - t.chunk.start) * t.frame_bytes for t in self.tasks)

    def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None,
                       data_context=None) -> list[ReadTask]:
        # One task per chunk whatever `parallelism` says: merging chunks would serialise their decode.
        read_tasks = []
        for task in self.tasks:
            def read(task: ChunkTask = task):
                yield BlockAccessor.batch_to_block(decode_chunk_row(task))

            size = (task.chunk.end - task.chunk.start) * task.frame_bytes
            meta = BlockMetadata(num_rows=1, size_bytes=size, input_files=[task.uri], exec_stats=None)
            read_tasks.append(ReadTask(read, meta, per_task_row_limit=per_task_row_limit))
        return read_tasks
