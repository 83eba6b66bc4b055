"""decode_chunk: a chunk's frames, bit-exact with a sequential decode, as BGR uint8 in coded orientation.

PyAV path: seek to the chunk's keyframe, start decoding at that keyframe's own packet (demuxers
without an index land anywhere near it), drop the lead-in (frames before `start`), stop at `end`.
Zero-byte packets are skipped, as FFmpeg's own decode loop does (Theora writes one per dropped
frame). Every yielded frame's pts is checked against the planned pts, so a seek that lands late is
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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import av
import numpy as np

from ffray.errors import MediaError
from ffray.media.chunks import Chunk
from ffray.media.convert import frame_to_bgr
from ffray.media.io import open_input
from ffray.media.probe import ogg_first_pts, pick_video_stream

log = logging.getLogger(__name__)

BACKENDS = ("auto", "pyav")


@dataclass
class Frame:
    index: int  # frame index in the whole video (presentation order)
    pts: int  # presentation timestamp in the stream's time base
    time: float  # seconds (pts * time_base)
    image: Any  # BGR uint8 HxWx3, coded orientation (or what decode_chunk's `convert` made)


def decode_chunk(uri: str | os.PathLike, chunk: Chunk, backend: str = "auto",
                 convert: Callable[[av.VideoFrame], Any] = frame_to_bgr) -> Iterator[Frame]:
    """Yield the frames [chunk.start, chunk.end) of the video at `uri` (a generator: memory is one
    frame plus the decoder's reference frames, whatever the chunk or video length). `convert` makes
    each `Frame.image` from the decoded frame: BGR by default; `raw_frame` keeps the decoder's own
    frame (its pixel format, no conversion) for a writer that composes in YUV."""
    uri = os.fspath(uri)
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return _decode_pyav(uri, chunk, convert)


def raw_frame(frame: av.VideoFrame) -> av.VideoFrame:
    """The decoder's frame as it is. Read-only: the decoder may still reference its pixels."""
    return frame


class _LateSeek(Exception):
    """The seek landed after the chunk's first frame; decode again from the stream start."""


def _decode_pyav(uri: str, chunk: Chunk, convert) -> Iterator[Frame]:
    if not chunk.exact_seek:
        yield from _decode_pyav_by_count(uri, chunk, convert)
        return
    seek = chunk.seek_frame > 0
    try:
        yield from _decode_pyav_once(uri, chunk, seek, convert)
    except _LateSeek:
        log.warning("%s: seek for chunk %d landed late; decoding from the stream start", uri, chunk.index)
        yield from _decode_pyav_once(uri, chunk, False, convert)


def _open_video(container, chunk: Chunk):
    stream = container.streams[chunk.video_stream_index]
    stream.thread_type = "AUTO"
    for other in container.streams:
        if other.index != stream.index:
            other.discard = av.stream.Discard.all
    return stream


def _video_packets(container, stream) -> Iterator[av.Packet]:
    for packet in container.demux(stream):
        # zero-byte packets are no frames: Theora's "previous frame again" (what libtheora's rate
        # control emits for dropped frames) and the demuxer's end marker. The decoder refuses them
        # (EINVAL), FFmpeg's own decode loop skips them, and probe does not count them.
        if packet.size:
            yield packet


def _ogg_first_pts_fixed(packets: Iterator[av.Packet], order: tuple[int, ...]) -> Iterator[av.Packet]:
    """FFmpeg's Ogg demuxer times the first packet it reads (at the stream start or after a seek) as
    its page's end time minus one tick per packet on the page (see probe.ogg_first_pts): at 1/12800
    a keyframe at 4096 comes out as 4607. The next packet's time is exact, and Ogg video (Theora,
    VP8) is never reordered, so the first packet is the planned frame before it. `order`: planned pts
    from the chunk's keyframe on. When the next packet is not in the plan, nothing is changed and
    the pts checks in _decode_pyav_once decide (a wrong guess is a late seek, never a wrong frame)."""
    first = next(packets, None)
    if first is None:
        return
    second = next(packets, None)
    if second is not None and second.pts is not None:
        position = {pts: i for i, pts in enumerate(order)}.get(second.pts)
        if position:
            first.pts = first.dts = order[position - 1]
    yield first
    if second is not None:
        yield second
    yield from packets


def _ogg_start_fixed(packets: Iterator[av.Packet]) -> Iterator[av.Packet]:
    """The stream's first packet timed as probe times it (probe.ogg_first_pts)."""
    head = [p for _, p in zip(range(3), packets, strict=False)]
    if len(head) == 3 and all(p.pts is not None for p in head):
        head[0].pts = head[0].dts = ogg_first_pts(*(p.pts for p in head))
    yield from head
    yield from packets


def _from_planned_keyframe(packets: Iterator[av.Packet], seek_pts: int) -> Iterator[av.Packet]:
    """Decoding starts at the chunk's own keyframe packet. Demuxers without an index (MPEG-TS) seek
    by timestamp to whatever packet is near, often inside a GOP, and a decoder started there drops or
    invents frames; one that lands after the keyframe (first a later keyframe) is a late seek."""
    for packet in packets:
        if packet.pts == seek_pts:
            yield packet
            yield from packets
            return
        if packet.is_keyframe and packet.pts is not None and packet.pts > seek_pts:
            raise _LateSeek
    raise _LateSeek


def _decoded(packets: Iterator[av.Packet], stream, uri: str, where: str) -> Iterator[av.VideoFrame]:
    try:
        for packet in packets:
            yield from stream.decode(packet)
        yield from stream.decode(None)  # drain: the zero-byte end marker was filtered out
    except av.error.FFmpegError as exc:
        raise MediaError(uri, f"corrupt video data {where} ({exc.strerror or exc})") from exc


def _decode_pyav_once(uri: str, chunk: Chunk, seek: bool, convert) -> Iterator[Frame]:
    expected = chunk.frame_pts
    n = len(expected)
    got = 0
    with open_input(uri) as container:
        stream = _open_video(container, chunk)
        time_base = stream.time_base
        if seek:
            # MPEG-TS seeks by decode time (no index): aim at the keyframe's dts, which is never after
            # its pts, so the seek lands on or before it (an early landing costs only demuxing)
            target = chunk.seek_pts if chunk.seek_dts is None else min(chunk.seek_pts, chunk.seek_dts)
            try:
                container.seek(target, stream=stream, backward=True, any_frame=False)
            except av.error.FFmpegError as exc:
                raise MediaError(uri, f"cannot seek to frame {chunk.seek_frame} ({exc})") from exc
        where = f"in chunk {chunk.index} (frames {chunk.start}-{chunk.end - 1})"
        packets = _video_packets(container, stream)
        if container.format.name == "ogg":
            after = () if chunk.end_pts is None else (chunk.end_pts,)  # a one-frame chunk needs its successor
            packets = _ogg_first_pts_fixed(packets, chunk.lead_pts + chunk.frame_pts + after)
        if seek:
            packets = _from_planned_keyframe(packets, chunk.seek_pts)
        for frame in _decoded(packets, stream, uri, where):
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
            yield Frame(chunk.start + got, pts, float(pts * time_base), convert(frame))
            got += 1
    if got != n:
        raise MediaError(uri, f"only {got} of {n} frames decodable {where} (truncated or corrupt)")


def _decode_pyav_by_count(uri: str, chunk: Chunk, convert) -> Iterator[Frame]:
    """Streams without usable timestamps: the plan is one chunk; frames are counted from the start."""
    index = 0
    with open_input(uri) as container:
        stream = _open_video(container, chunk)
        for frame in _decoded(_video_packets(container, stream), stream, uri, "decoding from the stream start"):
            if index >= chunk.start:
                if index >= chunk.end:
                    break
                pts = chunk.frame_pts[index - chunk.start]
                yield Frame(index, pts, float(pts * chunk.time_base), convert(frame))
            index += 1
    if index < chunk.end:
        raise MediaError(uri, f"only {index} of {chunk.end} frames decodable (truncated or corrupt)")


def decode_all(uri: str | os.PathLike) -> Iterator[tuple[int | None, np.ndarray]]:
    """Plain sequential decode of the first video stream, (pts, BGR image) per frame: the reference
    that chunked decoding must equal."""
    with open_input(uri) as container:
        stream = pick_video_stream(container, uri)
        stream.thread_type = "AUTO"
        packets = _video_packets(container, stream)  # FFmpeg's decode loop: empty packets skipped
        if container.format.name == "ogg":
            packets = _ogg_start_fixed(packets)
        for frame in _decoded(packets, stream, str(uri), "decoding from the stream start"):
            yield frame.pts, frame_to_bgr(frame)
