from __future__ import annotations

from ffray.faces.patches import Canvas
from ffray.pipeline.live import Reporter
from ffray.pipeline.stages import JobTable, SourceCache, StageStart, swap_rows


class FaceSwapperStage:
    """Swapper pool: prepares each source identity once, then swaps the selected faces of each chunk."""

    def __init__(self, table: JobTable):
        from ffray.faces.image import read_image
        from ffray.faces.packs import load_swapper

        self.table = table
        self.start = StageStart("swapper", lambda: load_swapper(
            table.options, table.execution_options("swapper"), table.store()), live=Reporter(table.live_board))
        self.sources = SourceCache(self.start.value, table, read_image)
        self.canvas = Canvas()

    def __call__(self, batch: dict) -> dict:
        if self.start.error is not None:
            return self.start.failed_rows(batch)
        return swap_rows(batch, self.start.value, self.sources, self.table, self.canvas)
