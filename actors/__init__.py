"""Thin Ray Data stage classes: each loads its face component (by path/name, never through constructor
arguments) in `__init__` and calls `ffray.pipeline.stages` in `__call__`. Distinct class names per stage
so Ray's operator names and stats stay apart."""

from actors.detector import FaceDetectorStage
from actors.enhancer import FaceEnhancerStage
from actors.segment_writer import SegmentWriterStage
from actors.swapper import FaceSwapperStage

__all__ = ["FaceDetectorStage", "FaceSwapperStage", "FaceEnhancerStage", "SegmentWriterStage"]
