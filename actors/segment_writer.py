from __future__ import annotations

from ffray.pipeline.live import Reporter
from ffray.pipeline.stages import JobTable, write_rows


class SegmentWriterStage:
    """CPU pool: encodes each chunk to its segment file (atomic, deterministic path); emits metadata only."""

    def __init__(self, table: JobTable):
        self.table = table
        self.live = Reporter(table.live_board)
        self.live.started("writer")

    def __call__(self, batch: dict) -> dict:
        return write_rows(batch, self.table, self.live)
