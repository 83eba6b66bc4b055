from __future__ import annotations

from ffray.pipeline.live import Reporter
from ffray.pipeline.stages import JobTable, StageStart, detect_rows


class FaceDetectorStage:
    """Detector pool: analyser (detector + landmarker + recognizer where needed) and face selection."""

    def __init__(self, table: JobTable):
        from ffray.faces.packs import load_analyser

        self.table = table
        self.start = StageStart("detector", lambda: None if table.cuts_only else load_analyser(
            table.options, table.execution_options("detector"), table.store()), live=Reporter(table.live_board))

    def __call__(self, batch: dict) -> dict:
        if self.start.error is not None:
            return self.start.failed_rows(batch)
        return detect_rows(batch, self.start.value, self.table)
