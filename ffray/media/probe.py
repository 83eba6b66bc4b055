"""probe(uri) -> VideoInfo: everything the planner, decoders, encoder and remuxer need, read once.

The frame list comes from demuxing every video packet (no decoding): the frame count is the number
of non-discarded, non-empty packets (a zero-byte Theora packet repeats the previous frame: it
stretches that frame, it is not one), never the container's claim, and `frame_pts` is their
presentation timestamps sorted, which is the order a decoder outputs frames in. Only the first frame
is decoded, to read the display matrix (rotation) that FFmpeg attaches to decoded frames. (Ogg: the
first packet's time is corrected, see ogg_first_pts; AVI with B-frame H.264 is refused.)

content_hash = sha256 over the file size, its first and last MiB, and the video packet list
(pts, dts, size, key flag) in file order. It needs two ranged reads plus the demux that probe does
anyway, yet changes whenever the video content does (any re-encode changes packet sizes; a same-size
edit inside a packet is the only blind spot, and edits usually change the head or tail too).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import os
import struct
from dataclasses import dataclass, field
from fractions import Fraction
from itertools import pairwise

import av

from ffray.errors import MediaError
from ffray.media.io import check_readable, open_input, read_head_tail

HASH_EDGE_BYTES = 1 << 20
HASH_VERSION = b"ffray-content-hash-v1"

_RANGE = {0: "unknown", 1: "tv", 2: "pc"}
_SPACE = {0: "rgb", 1: "bt709", 2: "unknown", 4: "fcc", 5: "bt470bg", 6: "smpte170m", 7: "smpte240m",
          8: "ycgco", 9: "bt2020nc", 10: "bt2020c", 14: "ictcp"}
_PRIMARIES = {1: "bt709", 2: "unknown", 4: "bt470m", 5: "bt470bg", 6: "smpte170m", 7: "smpte240m",
              8: "film", 9: "bt2020", 10: "smpte428", 11: "smpte431", 12: "smpte432", 22: "jedec-p22"}
_TRC = {1: "bt709", 2: "unknown", 4: "gamma22", 5: "gamma28", 6: "smpte170m", 7: "smpte240m",
        8: "linear", 9: "log100", 10: "log316", 11: "iec61966-2-4", 12: "bt1361e", 13: "iec61966-2-1",
        14: "bt2020-10", 15: "bt2020-12", 16: "smpte2084", 17: "smpte428", 18: "arib-std-b67"}


@dataclass(frozen=True)
class AudioInfo:
    index: int  # stream index in the container
    codec: str
    channels: int
    sample_rate: int
    time_base: Fraction | None = None
    layout: str = ""
    language: str | None = None

    def to_json(self) -> dict:
        return {"index": self.index, "codec": self.codec, "channels": self.channels,
                "sample_rate": self.sample_rate, "layout": self.layout, "language": self.language}


@dataclass(frozen=True)
class VideoInfo:
    uri: str
    container: str  # FFmpeg demuxer name, e.g. "mov,mp4,m4a,3gp,3g2,mj2"
    codec: str
    coded_width: int  # decoded frame size, in the orientation frames are stored (what decode yields)
    coded_height: int
    width: int  # display size: rotation applied
    height: int
    rotation: int  # clockwise degrees a player turns the coded frame to show it upright: 0/90/180/270
    pix_fmt: str
    bit_depth: int
    time_base: Fraction
    fps: Fraction  # average frame rate
    vfr: bool
    frames: int  # exact: packets that decode to a frame
    duration: float  # seconds, first frame's pts to the end of the last frame
    keyframes: tuple[int, ...]  # frame indices (presentation order) of keyframes
    frame_pts: tuple[int, ...]  # every frame's pts in presentation order, in time_base units
    audio: tuple[AudioInfo, ...]
    color: dict = field(hash=False, compare=True)  # range, space, primaries, trc (FFmpeg names)
    content_hash: str = ""
    video_stream_index: int = 0
    size: int = 0  # file bytes
    display_matrix: tuple[int, ...] | None = None  # the 9 int32 of the source's display matrix
    sample_aspect_ratio: Fraction | None = None
    exact_seek: bool = True  # False: timestamps unusable for seeking; plan_chunks makes one chunk
    keyframe_dts: tuple[int | None, ...] = ()  # decode timestamp of each keyframe (same order as keyframes)

    @property
    def end_pts(self) -> int:
        """pts just past the last frame (first pts + duration in time_base units)."""
        return self.frame_pts[0] + round(Fraction(self.duration) / self.time_base) if self.frame_pts else 0

    def frame_time(self, index: int) -> float:
        return float(self.frame_pts[index] * self.time_base)

    def to_json(self) -> dict:
        """Plain JSON-able summary (lists shortened to counts where they can be long)."""
        return {
            "uri": self.uri,
            "container": self.container,
            "codec": self.codec,
            "width": self.width,
            "height": self.height,
            "coded_width": self.coded_width,
            "coded_height": self.coded_height,
            "rotation": self.rotation,
            "pix_fmt": self.pix_fmt,
            "bit_depth": self.bit_depth,
            "time_base": str(self.time_base),
            "fps": f"{self.fps.numerator}/{self.fps.denominator}",
            "vfr": self.vfr,
            "frames": self.frames,
            "duration": self.duration,
            "keyframes": len(self.keyframes),
            "audio": [a.to_json() for a in self.audio],
            "color": dict(self.color),
            "content_hash": self.content_hash,
            "video_stream_index": self.video_stream_index,
            "size": self.size,
        }

    def replace(self, **changes) -> VideoInfo:
        return dataclasses.replace(self, **changes)


def _rotation_from_matrix(matrix: tuple[int, ...]) -> int:
    """Clockwise display rotation, snapped to a multiple of 90, from an FFmpeg display matrix
    (same maths as av_display_rotation_get, which returns the counter-clockwise angle)."""
    import math

    a, b, _, c, d, _, _, _, _ = matrix
    scale0 = math.hypot(a, c)
    scale1 = math.hypot(b, d)
    if scale0 == 0 or scale1 == 0:
        return 0
    ccw = -math.degrees(math.atan2(b / scale1, a / scale0))
    return int(round(-ccw / 90.0)) * 90 % 360


def ogg_first_pts(pts0: int, pts1: int, pts2: int) -> int:
    """The real time of an Ogg stream's first packet. FFmpeg's Ogg demuxer times it (and the first one
    after a seek) as its page's end time minus one tick per packet on the page, which is right only
    when a frame lasts one tick (time base 1/fps, as Theora and VP8 define it). FFmpeg writing a
    finer clock (PyAV's 1/12800) reads back as 511, 512, 1024, ...: the first frame one tick before
    the second. Frames further apart than a tick: the first sits one step before the second."""
    step = pts2 - pts1
    if step > 1 and pts1 - step >= 0:
        return pts1 - step
    return pts0


def _avi_times_scrambled(uri: str, index: int, packets: int = 64) -> bool:
    """Whether the first frames of an AVI's video decode out of time order. A decoder that may
    reorder (has_b_frames, which H.264 also sets when the SPS just does not say) is not enough:
    only actual B-frames scramble the times."""
    with open_input(uri) as container:
        stream = container.streams[index]
        stream.codec_context.thread_count = 1
        times = []
        try:
            for packet in itertools.islice(container.demux(stream), packets):
                if packet.size:
                    times.extend(frame.pts for frame in stream.decode(packet))
        except av.error.FFmpegError:
            return False  # decode_chunk reports bad data where it is
    return any(a is None or b is None or b <= a for a, b in pairwise(times))


def pick_video_stream(container, uri) -> av.video.stream.VideoStream:
    for stream in container.streams.video:
        if stream.disposition & av.stream.Disposition.attached_pic:
            continue  # cover art, not the video
        return stream
    kinds = sorted({s.type for s in container.streams})
    if "data" in kinds:
        # e.g. VP9 or AV1 muxed into MPEG-TS: FFmpeg writes it, but reads it back as an opaque stream
        raise MediaError(uri, f"no video stream (FFmpeg reads only {' and '.join(kinds)} streams here; a video "
                              "codec this container has no identifier for reads back as data)")
    raise MediaError(uri, "no video stream")


def probe(uri: str | os.PathLike) -> VideoInfo:
    """Read a video's stream facts, exact frame list and keyframes. Raises MediaError naming the file
    for anything that is not a readable video."""
    uri = os.fspath(uri)
    size = check_readable(uri)
    with open_input(uri) as container:
        stream = pick_video_stream(container, uri)
        ctx = stream.codec_context
        codec_name = ctx.codec.canonical_name if ctx is not None else None
        if not codec_name or codec_name == "none":
            raise MediaError(uri, "unsupported video codec (FFmpeg has no decoder for it)")
        try:
            av.codec.Codec(codec_name, "r")
        except (av.error.FFmpegError, ValueError) as exc:
            raise MediaError(uri, f"unsupported video codec {codec_name!r}") from exc
        for other in container.streams:
            if other.index != stream.index:
                other.discard = av.stream.Discard.all  # skip reading their payloads where the demuxer can
        ctx.thread_count = 1
        packets: list[tuple[int | None, int | None, int, bool]] = []
        durations: list[int] = []
        first_frame = None
        seen = 0
        empty_pts: list[int] = []  # zero-byte packets (Theora's "previous frame again" for dropped frames)
        try:
            for packet in container.demux(stream):
                if packet.size == 0:
                    if packet.pts is not None:
                        empty_pts.append(packet.pts)
                    continue
                seen += 1
                if packet.is_discard:
                    continue  # before an edit list's start: the decoder drops it
                packets.append((packet.pts, packet.dts, packet.size, bool(packet.is_keyframe)))
                durations.append(packet.duration or 0)
                if first_frame is None:
                    for frame in stream.decode(packet):
                        first_frame = frame
                        break
            if first_frame is None:
                for frame in stream.decode(None):
                    first_frame = frame
                    break
        except av.error.FFmpegError as exc:
            if not packets:
                raise MediaError(uri, f"cannot read video packets ({exc.strerror or exc})") from exc
            raise MediaError(uri, f"corrupt or truncated after {len(packets)} video packets "
                                  f"({exc.strerror or exc})") from exc
        if not packets or first_frame is None:
            raise MediaError(uri, "video stream has no decodable frames")
        if (container.format.name == "avi" and codec_name in ("h264", "hevc") and ctx.has_b_frames
                and _avi_times_scrambled(uri, stream.index)):
            # AVI stores decode order only; FFmpeg hands a reordering H.264/HEVC decoder the slot times
            # of the packets, so frames come out with scrambled times and there is no right answer
            raise MediaError(uri, f"{codec_name} with B-frames in AVI has no presentation timestamps "
                                  "(frames decode with scrambled times); re-encode it to .mp4 or .mkv")
        # an mp4/mov sample table is exact: fewer packets than it lists means the data was cut off
        listed = stream.frames
        if "mp4" in container.format.name and listed and seen < listed:
            raise MediaError(uri, f"truncated: the file lists {listed} video frames but only "
                                  f"{len(packets)} are present")

        time_base = stream.time_base
        timed = packets  # the packet list with the Ogg first-packet time corrected (the hash keeps the raw one)
        if container.format.name == "ogg" and len(packets) >= 3 and all(p[0] is not None for p in packets[:3]):
            first = ogg_first_pts(packets[0][0], packets[1][0], packets[2][0])
            timed = [(first, first, *packets[0][2:]), *packets[1:]]
        exact_seek = all(p[0] is not None for p in timed)
        if exact_seek:
            frame_pts = sorted(p[0] for p in timed)
            exact_seek = all(b > a for a, b in pairwise(frame_pts))
        if not exact_seek:
            # no usable timestamps (raw streams, broken muxers): a synthetic CFR clock, one chunk only
            rate = stream.average_rate or stream.guessed_rate or Fraction(25)
            frame_pts = [round(i / (rate * time_base)) for i in range(len(packets))]
        pts_index = {pts: i for i, pts in enumerate(frame_pts)}
        if exact_seek:
            key_dts = {pts_index[p[0]]: p[1] for p in timed if p[3]}
            keyframes = sorted(key_dts)
            keyframe_dts = [key_dts[k] for k in keyframes]
        else:
            keyframes = [i for i, p in enumerate(packets) if p[3]]
            keyframe_dts = [None] * len(keyframes)

        deltas = [b - a for a, b in pairwise(frame_pts)]
        # Ogg packets carry no duration: FFmpeg gives each Theora packet one tick whatever the clock
        trusted = exact_seek and durations[-1] > 0 and container.format.name != "ogg"
        last_duration = durations[-1] if trusted else (sorted(deltas)[len(deltas) // 2] if deltas else 0)
        if last_duration <= 0 and stream.average_rate:
            last_duration = max(1, round(1 / (stream.average_rate * time_base)))
        if exact_seek and empty_pts and max(empty_pts) > frame_pts[-1]:
            # dropped frames after the last coded one still show it: the video lasts until they end
            slots = sorted(set(frame_pts) | set(empty_pts))
            steps = sorted(b - a for a, b in pairwise(slots))
            last_duration = max(empty_pts) + steps[len(steps) // 2] - frame_pts[-1]
        span = frame_pts[-1] + last_duration - frame_pts[0]
        duration = float(span * time_base)
        # a CFR clock in a coarse time base (1 ms) jitters by one tick; in a frame-rate time base it cannot
        vfr = bool(deltas) and (max(deltas) - min(deltas)) > (1 if min(deltas) >= 4 else 0)
        # average over the frames that exist (not the container's nominal rate, nor a last-frame
        # duration guess), snapped to the stream's declared rate when they agree within 0.1%
        declared = [r for r in (stream.base_rate, stream.average_rate, stream.guessed_rate) if r]
        if deltas:
            fps = Fraction(len(frame_pts) - 1) / (Fraction(frame_pts[-1] - frame_pts[0]) * time_base)
            close = [r for r in declared if abs(r - fps) <= fps / 1000]
            fps = close[0] if close else fps.limit_denominator(1001000)
        else:
            fps = declared[0] if declared else Fraction(25)

        matrix = None
        for side in first_frame.side_data:
            if str(getattr(side, "type", "")).endswith("DISPLAYMATRIX"):
                raw = bytes(side)
                if len(raw) == 36:
                    matrix = struct.unpack("<9i", raw)
        rotation = _rotation_from_matrix(matrix) if matrix else 0
        coded_w, coded_h = first_frame.width, first_frame.height
        width, height = (coded_h, coded_w) if rotation in (90, 270) else (coded_w, coded_h)
        pix_fmt = first_frame.format.name
        bit_depth = max(c.bits for c in first_frame.format.components) if first_frame.format.components else 8

        audio = tuple(
            AudioInfo(
                index=a.index,
                codec=a.codec_context.codec.canonical_name if a.codec_context is not None else "none",
                channels=a.codec_context.channels if a.codec_context is not None else 0,
                sample_rate=a.codec_context.sample_rate if a.codec_context is not None else 0,
                time_base=a.time_base,
                layout=a.codec_context.layout.name if a.codec_context is not None else "",
                language=a.language,
            )
            for a in container.streams.audio
        )
        color = {
            "range": _RANGE.get(int(first_frame.color_range), str(int(first_frame.color_range))),
            "space": _SPACE.get(int(first_frame.colorspace), str(int(first_frame.colorspace))),
            "primaries": _PRIMARIES.get(int(ctx.color_primaries), str(int(ctx.color_primaries))),
            "trc": _TRC.get(int(ctx.color_trc), str(int(ctx.color_trc))),
        }
        container_name = container.format.name
        stream_index = stream.index
        sar = stream.sample_aspect_ratio

    content_hash = _content_hash(uri, size, packets)
    return VideoInfo(
        uri=uri, container=container_name, codec=codec_name, coded_width=coded_w, coded_height=coded_h,
        width=width, height=height, rotation=rotation, pix_fmt=pix_fmt, bit_depth=bit_depth,
        time_base=time_base, fps=fps, vfr=vfr, frames=len(frame_pts), duration=duration,
        keyframes=tuple(keyframes), frame_pts=tuple(frame_pts), audio=audio, color=color,
        content_hash=content_hash, video_stream_index=stream_index, size=size, display_matrix=matrix,
        sample_aspect_ratio=sar, exact_seek=exact_seek, keyframe_dts=tuple(keyframe_dts),
    )


def _content_hash(uri: str, size: int, packets) -> str:
    head, tail = read_head_tail(uri, size, HASH_EDGE_BYTES)
    digest = hashlib.sha256(HASH_VERSION)
    digest.update(struct.pack("<Q", size))
    digest.update(head)
    digest.update(tail)
    none = -(1 << 63)
    for pts, dts, psize, key in packets:
        digest.update(struct.pack("<qqIB", none if pts is None else pts, none if dts is None else dts,
                                  psize, key))
    return digest.hexdigest()
