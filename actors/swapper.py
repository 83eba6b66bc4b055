from __future__ import annotations

from ffray.pipeline.stages import JobTable, SourceCache, swap_rows


class FaceSwapperStage:
    """Swapper pool: prepares each source identity once, then swaps the selected faces of each chunk."""

    def __init__(self, table: JobTable):
        from ffray.faces.image import read_image
        from ffray.faces.packs import load_swapper

        self.table = table
        self.swapper = load_swapper(table.options, table.execution_options("swapper"), table.store())
        self.sources = SourceCache(self.swapper, table, read_image)

    def __call__(self, batch: dict) -> dict:
        return swap_rows(batch, self.swapper, self.sources, self.table)
