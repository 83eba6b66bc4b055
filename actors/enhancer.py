from __future__ import annotations

from ffray.faces.patches import Canvas
from ffray.pipeline.live import Reporter
from ffray.pipeline.stages import JobTable, StageStart, enhance_rows


def _load(table: JobTable):
    from ffray.faces.packs import load_enhancer

    enhancer = load_enhancer(table.options, table.execution_options("enhancer"), table.store())
    if enhancer is None:
        raise ValueError("FaceEnhancerStage needs face_enhancer_model")
    return enhancer


class FaceEnhancerStage:
    """Enhancer pool (only in the pipeline when a face enhancer model is set)."""

    def __init__(self, table: JobTable):
        self.table = table
        self.start = StageStart("enhancer", lambda: _load(table), live=Reporter(table.live_board))
        self.canvas = Canvas()

    def __call__(self, batch: dict) -> dict:
        if self.start.error is not None:
            return self.start.failed_rows(batch)
        return enhance_rows(batch, self.start.value, self.table, self.canvas)
