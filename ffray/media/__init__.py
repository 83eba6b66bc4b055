"""Media layer: probe, keyframe-aligned chunk plans, frame-exact chunk decoding, segment encoding and
remux. Frames are BGR uint8 HxWx3 in the coded orientation (see `VideoInfo.rotation`)."""

from ffray.media.chunks import Chunk, plan_chunks
from ffray.media.convert import PIPELINE_BIT_DEPTH, bit_depth_note
from ffray.media.decode import Frame, decode_all, decode_chunk
from ffray.media.encode import EncodeOptions, SegmentInfo, SegmentWriter, encode_segment
from ffray.media.io import open_output_atomic
from ffray.media.probe import AudioInfo, VideoInfo, probe
from ffray.media.remux import OutputInfo, remux

__all__ = [
    "AudioInfo",
    "PIPELINE_BIT_DEPTH",
    "Chunk",
    "EncodeOptions",
    "OutputInfo",
    "SegmentInfo",
    "SegmentWriter",
    "Frame",
    "VideoInfo",
    "bit_depth_note",
    "decode_all",
    "decode_chunk",
    "encode_segment",
    "open_output_atomic",
    "plan_chunks",
    "probe",
    "remux",
]
