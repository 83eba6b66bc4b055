"""decode_chunk: a chunk's frames, bit-exact with a sequential decode, as BGR uint8 in coded orientation.

PyAV path: seek to the chunk's keyframe, decode, drop the lead-in (frames before `start`), stop at
`end`. Every yielded frame's pts is checked against the planned pts, so a seek that lands late is
retried from the stream start and a frame the decoder loses (corrupt data) is an error, never a
silent shift. Colour conversion is FFmpeg's (swscale) `bgr24`, the same call for every path, so a
frame's bytes do not depend on how it was reached.

Why no decord: measured in benchmarks/media.py (see benchmarks/README.md). decord returns wrong
frames after seeking into open-GOP H.264, fails on rotated streams, converts 10-bit differently,
uses swscale's approximate colour path, and reads object-store files only by loading them whole; it
is not faster per chunk either. `backend` stays a parameter so a verified backend can be added.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass

import av
import numpy as np

from ffray.errors import MediaError
from ffray.media.chunks import Chunk
from ffray.media.convert import frame_to_bgr
from ffray.media.io import open_input
from ffray.media.probe import pick_video_stream

log = logging.getLogger(__name__)

BACKENDS = ("auto", "pyav")


@dataclass
class Frame:
    index: int  # frame index in the whole video (presentation order)
    pts: int  # presentation timestamp in the stream's time base
    time: float  # seconds (pts * time_base)
    image: np.ndarray  # BGR uint8 HxWx3, coded orientation


def decode_chunk(uri: str | os.PathLike, chunk: Chunk, backend: str = "auto") -> Iterator[Frame]:
    """Yield the frames [chunk.start, chunk.end) of the video at `uri` (a generator: memory is one
    frame plus the decoder's reference frames, whatever the chunk or video length)."""
    uri = os.fspath(uri)
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return _decode_pyav(uri, chunk)


class _LateSeek(Exception):
    """The seek landed after the chunk's first frame; decode again from the stream start."""


def _decode_pyav(uri: str, chunk: Chunk) -> Iterator[Frame]:
    if not chunk.exact_seek:
        yield from _decode_pyav_by_count(uri, chunk)
        return
    seek = chunk.seek_frame > 0
    try:
        yield from _decode_pyav_once(uri, chunk, seek)
    except _LateSeek:
        log.warning("%s: seek for chunk %d landed late; decoding from the stream start", uri, chunk.index)
        yield from _decode_pyav_once(uri, chunk, False)


def _open_video(container, chunk: Chunk):
    stream = container.streams[chunk.video_stream_index]
    stream.thread_type = "AUTO"
    for other in container.streams:
        if other.index != stream.index:
            other.discard = av.stream.Discard.all
    return stream


def _packets_decoded(container, stream, uri: str, where: str) -> Iterator[av.VideoFrame]:
    try:
        for packet in container.demux(stream):
            yield from stream.decode(packet)
    except av.error.FFmpegError as exc:
        raise MediaError(uri, f"corrupt video data {where} ({exc.strerror or exc})") from exc


def _decode_pyav_once(uri: str, chunk: Chunk, seek: bool) -> Iterator[Frame]:
    expected = chunk.frame_pts
    n = len(expected)
    got = 0
    with open_input(uri) as container:
        stream = _open_video(container, chunk)
        time_base = stream.time_base
        if seek:
            try:
                container.seek(chunk.seek_pts, stream=stream, backward=True, any_frame=False)
            except av.error.FFmpegError as exc:
                raise MediaError(uri, f"cannot seek to frame {chunk.seek_frame} ({exc})") from exc
        where = f"in chunk {chunk.index} (frames {chunk.start}-{chunk.end - 1})"
        for frame in _packets_decoded(container, stream, uri, where):
            pts = frame.pts
            if pts is None:
                raise MediaError(uri, f"decoded frame without a timestamp {where}")
            if pts < chunk.start_pts:
                continue  # lead-in from the keyframe
            if got == 0 and pts != chunk.start_pts:
                if seek:
                    raise _LateSeek
                raise MediaError(uri, f"frame {chunk.start} (pts {chunk.start_pts}) is missing; "
                                      f"decoder gave pts {pts} {where}")
            if got >= n or (chunk.end_pts is not None and pts >= chunk.end_pts):
                break
            if pts != expected[got]:
                raise MediaError(uri, f"frame {chunk.start + got} expected pts {expected[got]}, decoder gave "
                                      f"{pts} (corrupt or missing frames) {where}")
            yield Frame(chunk.start + got, pts, float(pts * time_base), frame_to_bgr(frame))
            got += 1
    if got != n:
        raise MediaError(uri, f"only {got} of {n} frames decodable {where} (truncated or corrupt)")


def _decode_pyav_by_count(uri: str, chunk: Chunk) -> Iterator[Frame]:
    """Streams without usable timestamps: the plan is one chunk; frames are counted from the start."""
    index = 0
    with open_input(uri) as container:
        stream = _open_video(container, chunk)
        for frame in _packets_decoded(container, stream, uri, f"after frame {index}"):
            if index >= chunk.start:
                if index >= chunk.end:
                    break
                pts = chunk.frame_pts[index - chunk.start]
                yield Frame(index, pts, float(pts * chunk.time_base), frame_to_bgr(frame))
            index += 1
    if index < chunk.end:
        raise MediaError(uri, f"only {index} of {chunk.end} frames decodable (truncated or corrupt)")


def decode_all(uri: str | os.PathLike) -> Iterator[tuple[int | None, np.ndarray]]:
    """Plain sequential decode of the first video stream, (pts, BGR image) per frame: the reference
    that chunked decoding must equal."""
    with open_input(uri) as container:
        stream = pick_video_stream(container, uri)
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            yield frame.pts, frame_to_bgr(frame)
