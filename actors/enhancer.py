from __future__ import annotations

from ffray.pipeline.stages import JobTable, enhance_rows


class FaceEnhancerStage:
    """Enhancer pool (only in the pipeline when a face enhancer model is set)."""

    def __init__(self, table: JobTable):
        from ffray.faces.packs import load_enhancer

        self.table = table
        self.enhancer = load_enhancer(table.options, table.execution_options("enhancer"), table.store())
        if self.enhancer is None:
            raise ValueError("FaceEnhancerStage needs face_enhancer_model")

    def __call__(self, batch: dict) -> dict:
        return enhance_rows(batch, self.enhancer, self.table)
