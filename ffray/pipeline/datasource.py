"""The job's chunk plan as a Ray Data source: one ReadTask per chunk, yielding ONE small row that
names the chunk. A row is a chunk so that one writer encodes one chunk in one go (bit-identical
segments after any crash), and because the source is a real Read, Ray's checkpointing could apply to it.

No frames travel: the detector decodes the chunk to find faces and cut their patches, the writer
decodes it again to paste them back and encode (`decode_frames`, the same frame-exact decode both
times). A 1080p decode costs ~6 ms a frame; each 6 MB frame hop through the object store cost more
than that in copies and serialisation, and the network when pools sit on different nodes.

Row columns: `video_key`, `chunk_id`, `chunk_index`, `start`, `end` (frame range, end exclusive),
`chunk_task` (the pickled ChunkTask, uint8), `error` ("" when fine), `error_kind`, and the read stage's
accounting columns (see stages.py).
"""

from __future__ import annotations

import pickle
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from ray.data.block import BlockAccessor, BlockMetadata
from ray.data.datasource import Datasource, ReadTask


@dataclass(frozen=True)
class ChunkTask:
    video_key: str
    uri: str
    chunk: Any  # ffray.media.Chunk: everything decode_chunk needs, so the read never re-probes
    frame_bytes: int  # H * W * 3 of the decoded frames, for Ray's size estimates


def task_of(batch: dict[str, Any], i: int) -> ChunkTask:
    return pickle.loads(np.asarray(batch["chunk_task"][i], np.uint8).tobytes())


def decode_frames(task: ChunkTask, raw: bool = False) -> Iterator[tuple[Any, int]]:
    """(BGR image in coded orientation, pts) of each frame of the chunk, one at a time, or (`raw`) the
    decoder's own frames; MediaError naming the file and frame range when the chunk does not decode
    whole."""
    from ffray.errors import MediaError
    from ffray.media import decode_chunk
    from ffray.media.convert import frame_to_bgr
    from ffray.media.decode import raw_frame

    chunk = task.chunk
    expected = chunk.end - chunk.start
    got = 0
    first = last = None
    for frame in decode_chunk(task.uri, chunk, convert=raw_frame if raw else frame_to_bgr):
        first = frame.index if first is None else first
        last = frame.index
        got += 1
        yield frame.image, frame.pts
    if got != expected or (got and (first != chunk.start or last != chunk.end - 1)):
        span = f"{first}-{last}" if got else "none"
        raise MediaError(task.uri, f"frames {chunk.start}-{chunk.end - 1}: decoded {got} of {expected} frames "
                                   f"(got {span}); the file is corrupt or truncated in that range")


def chunk_row(task: ChunkTask) -> dict[str, Any]:
    """The single row of one chunk (a batch of one)."""
    started = time.perf_counter()
    chunk = task.chunk
    row = {
        "video_key": np.array([task.video_key], dtype=object),
        "chunk_id": np.array([chunk.id], dtype=object),
        "chunk_index": np.array([chunk.index], dtype=np.int64),
        "start": np.array([chunk.start], dtype=np.int64),
        "end": np.array([chunk.end], dtype=np.int64),
        # as uint8, not bytes: numpy's fixed-width bytes type would drop the pickle's trailing zero bytes
        "chunk_task": np.frombuffer(pickle.dumps(task), np.uint8)[None],
        "error": np.array([""], dtype=object),
        "error_kind": np.array([""], dtype=object),
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
        return 1024 * len(self.tasks)

    def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None,
                       data_context=None) -> list[ReadTask]:
        # One task per chunk whatever `parallelism` says: merging chunks would serialise their decode.
        read_tasks = []
        for task in self.tasks:
            def read(task: ChunkTask = task):
                yield BlockAccessor.batch_to_block(chunk_row(task))

            meta = BlockMetadata(num_rows=1, size_bytes=1024, input_files=[task.uri], exec_stats=None)
            read_tasks.append(ReadTask(read, meta, per_task_row_limit=per_task_row_limit))
        return read_tasks
