"""Media layer: probe, keyframe-aligned chunk plans, frame-exact chunk decoding, segment encoding and
remux. Frames are BGR uint8 HxWx3 in the coded orientation (see `VideoInfo.rotation`)."""

from ffray.media.chunks import Chunk, plan_chunks
from ffray.media.decode import Frame, decode_all, decode_chunk
from ffray.media.io import open_output_atomic
from ffray.media.probe import AudioInfo, VideoInfo, probe

__all__ = [
    "AudioInfo",
    "Chunk",
    "Frame",
    "VideoInfo",
    "decode_all",
    "decode_chunk",
    "open_output_atomic",
    "plan_chunks",
    "probe",
]
