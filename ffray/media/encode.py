"""Segment encoding: one chunk's processed frames -> one video-only segment file, source pts kept.

Segments are ISO-BMFF (mp4) whose track clock is the source time base's denominator and whose movie
clock matches it (the default 1 ms movie clock rounds the edit list that carries a start offset), so
every frame keeps its exact source timestamp, VFR included; Matroska would round to 1 ms and MPEG-TS
to 1/90000 s. Encoding follows FaceFusion (libx264, CRF = round(51 - 0.51 * quality), preset veryfast,
BT.709 matrix, TV range, yuv420p, bt709 tags) with a fixed thread count and FFmpeg's bitexact flags,
so the same frames always give the same bytes (the pipeline re-encodes chunks after a crash).

Odd frame sizes: yuv420p needs even ones, so (as FaceFusion's normalize_resolution does) the encoded
size is each side rounded to an even number with Python's round (half to even: 65 -> 64, 67 -> 68)
and frames are resized bilinearly (cv2.resize) when their size differs. The writer decides this
from the VideoInfo, so callers keep handing it coded-size frames; remux reports it (resized_from).

AVI outputs: AVI has no presentation timestamps, only fixed-duration frame slots, and FFmpeg reads
H.264 in AVI back one slot late (it assumes a reordering delay: checked with PyAV 18 / FFmpeg 7, any
x264 settings); MPEG-4 Part 2 without B-frames (FFmpeg's mpeg4 encoder, the codec AVI files usually
hold) reads back on its exact slots. So .avi gets mpeg4 at a fixed quantizer (quality_to_qscale),
and a source whose frames do not sit on one frame clock is refused (avi_clock) with a clear error.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from ffray.errors import InputError, MediaError
from ffray.media.convert import bgr_to_frame
from ffray.media.io import open_output_atomic, sha256_and_size, split_uri
from ffray.media.probe import VideoInfo

VIDEO_ENCODERS = ("libx264", "libx265", "libvpx-vp9", "mpeg4", "h264_nvenc", "hevc_nvenc")
# NVIDIA's hardware encoders: on the GPU, so the writer pool needs a GPU share; A100/H100 have none
NVENC_ENCODERS = ("h264_nvenc", "hevc_nvenc")
PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")
# output extension -> (muxer, encoders it can hold, default encoder)  (FaceFusion's fix-ups: webm -> vp9)
OUTPUT_CONTAINERS = {
    ".mp4": ("mp4", VIDEO_ENCODERS, "libx264"),
    ".m4v": ("mp4", VIDEO_ENCODERS, "libx264"),
    ".mov": ("mov", VIDEO_ENCODERS, "libx264"),
    ".mkv": ("matroska", VIDEO_ENCODERS, "libx264"),
    ".webm": ("webm", ("libvpx-vp9",), "libvpx-vp9"),
    # AVI stores no presentation times, only frame slots; FFmpeg reads H.264 in AVI back one slot
    # late (it assumes a reordering delay), MPEG-4 Part 2 without B-frames exactly (see avi_clock)
    ".avi": ("avi", ("mpeg4",), "mpeg4"),
}
AVI_MAX_EMPTY_SLOTS = 1.0  # skipped slots per frame beyond which a source is not on a frame clock
_BT709 = 1  # AVCOL_PRI_BT709 == AVCOL_TRC_BT709 == AVCOL_SPC_BT709
_TV_RANGE = 1


def output_container(output: str | os.PathLike) -> tuple[str, str]:
    """(extension, FFmpeg muxer) for an output path; InputError for a container we do not write."""
    suffix = Path(split_uri(os.fspath(output))[1]).suffix.lower()
    if suffix not in OUTPUT_CONTAINERS:
        raise InputError(f"{output}: unsupported output container {suffix or '(none)'!r}; "
                         f"use one of {', '.join(OUTPUT_CONTAINERS)}")
    return suffix, OUTPUT_CONTAINERS[suffix][0]


def even_size(width: int, height: int) -> tuple[int, int]:
    """FaceFusion's normalize_resolution: each side to an even number, round(x / 2) * 2 (never 0)."""
    return max(2, round(width / 2) * 2), max(2, round(height / 2) * 2)


def encoded_size(info: VideoInfo) -> tuple[int, int]:
    """(width, height) segments and outputs are encoded at, in coded orientation."""
    return even_size(info.coded_width, info.coded_height)


def quality_to_qscale(quality: int) -> int:
    """MPEG-4 Part 2 quantizer 31..1 for quality 0..100, geometric as quantizer steps are (CRF is
    their logarithm): 80 -> 2, the usual 'high quality' setting, >= 40 dB on the project's clips."""
    return max(1, round(31 ** ((100 - float(quality)) / 100)))


def quality_to_crf(encoder: str, quality: int) -> int:
    """FaceFusion's mapping: quality 0..100 onto the encoder's CRF scale, best at 100."""
    top = 63 if encoder == "libvpx-vp9" else 51
    return round(float(np.interp(quality, [0, 100], [top, 0])))


@dataclass(frozen=True)
class EncodeOptions:
    encoder: str = "libx264"
    quality: int = 80  # 0..100, FaceFusion's --output-video-quality
    preset: str = "veryfast"  # x264/x265 preset; vp9: cpu-used 8 (ultrafast) .. 0 (veryslow)
    threads: int = 2  # fixed, never "auto": the bytes an encoder writes may depend on its thread count
    pix_fmt: str = "yuv420p"
    container: str | None = None  # FFmpeg muxer of the final output (for_output sets it); None: any

    def __post_init__(self):
        if self.encoder not in VIDEO_ENCODERS:
            raise InputError(f"--output-video-encoder: {self.encoder!r} is not one of {', '.join(VIDEO_ENCODERS)}")
        if not 0 <= int(self.quality) <= 100:
            raise InputError(f"--output-video-quality: must be 0..100, got {self.quality}")
        if self.preset not in PRESETS:
            raise InputError(f"--output-video-preset: {self.preset!r} is not one of {', '.join(PRESETS)}")
        if int(self.threads) < 1:
            raise InputError(f"encoder threads must be >= 1, got {self.threads}")

    @classmethod
    def for_output(cls, output_path: str | os.PathLike, encoder: str | None = None, quality: int = 80,
                   preset: str = "veryfast", threads: int = 2) -> EncodeOptions:
        """Options whose encoder the output container can hold (an encoder it cannot is replaced
        by the container's default, as FaceFusion does for webm)."""
        suffix, _ = output_container(output_path)
        _, allowed, default = OUTPUT_CONTAINERS[suffix]
        chosen = encoder if encoder in allowed else default
        return cls(encoder=chosen, quality=quality, preset=preset, threads=threads,
                   container=OUTPUT_CONTAINERS[suffix][0])

    @property
    def crf(self) -> int:
        return quality_to_crf(self.encoder, self.quality)

    def codec_options(self) -> dict[str, str]:
        if self.encoder == "libx264":
            return {"crf": str(self.crf), "preset": self.preset}
        if self.encoder == "libx265":
            return {"crf": str(self.crf), "preset": self.preset,
                    "x265-params": f"pools={self.threads}:frame-threads={self.threads}:log-level=error"}
        if self.encoder in NVENC_ENCODERS:
            # constant quality on x264's CRF scale; x264's presets onto NVENC's p1 (fastest) .. p7
            nvenc_preset = f"p{min(7, 1 + PRESETS.index(self.preset) * 7 // len(PRESETS))}"
            return {"preset": nvenc_preset, "rc": "vbr", "cq": str(self.crf), "b": "0"}
        if self.encoder == "mpeg4":
            # a fixed quantizer (with the qscale flag, set when the encoder opens); the preset is unused
            q = str(quality_to_qscale(self.quality))
            return {"qmin": q, "qmax": q, "mbd": "rd", "trellis": "1", "bf": "0"}
        # vp9 constant quality: -crf with -b:v 0; the x264-style preset picks the speed (veryfast -> 6)
        cpu_used = 8 - PRESETS.index(self.preset)
        return {"crf": str(self.crf), "b": "0", "deadline": "good", "cpu-used": str(cpu_used)}


@dataclass(frozen=True)
class SegmentInfo:
    path: str
    frames: int
    first_pts: int  # source time base
    last_pts: int
    sha256: str
    width: int = 0  # encoded size (even; see encoded_size)
    height: int = 0


@dataclass(frozen=True)
class AviClock:
    """How a video's frames sit in AVI's frame slots: slot k is shown at k * time_base."""
    time_base: Fraction
    frame_pts: tuple[int, ...]  # the source's, presentation order
    slots: tuple[int, ...]  # slot of each frame
    exact: bool  # every slot time equals the source frame time exactly

    def slot_of(self) -> dict[int, int]:
        """source pts -> slot"""
        return dict(zip(self.frame_pts, self.slots, strict=True))


def avi_clock(info: VideoInfo, output: str) -> AviClock:
    """AVI has one clock: a fixed frame duration, a frame (or an empty 'skipped' chunk) per slot.
    A source fits when its frame times are multiples of one duration with few slots left empty
    (exactly: the gcd of the timestamps; or, for a CFR source in a coarse clock such as Matroska's
    1 ms, its frame rate with every time within half a source tick). Otherwise InputError."""
    if info.rotation:
        raise InputError(f"{output}: AVI cannot carry the source's rotation ({info.rotation} degrees); "
                         "write .mp4, .mov or .mkv")
    pts = info.frame_pts
    candidates = []
    step = math.gcd(*pts) if any(pts) else 0
    if step:
        candidates.append((info.time_base * step, [p // step for p in pts], True))
    elif len(pts) == 1:
        candidates.append((1 / info.fps if info.fps else info.time_base, [0], True))
    if not info.vfr and info.fps:
        slot = 1 / info.fps
        slots = [round(p * info.time_base / slot) for p in pts]
        worst = max(abs(s * slot - p * info.time_base) for s, p in zip(slots, pts, strict=True))
        if worst <= info.time_base / 2:
            candidates.append((slot, slots, worst == 0))
    for time_base, slots, exact in candidates:
        increasing = all(b > a for a, b in zip(slots, slots[1:], strict=False))
        empty = slots[-1] + 1 - len(slots)
        if slots[0] >= 0 and increasing and empty <= AVI_MAX_EMPTY_SLOTS * len(slots):
            return AviClock(Fraction(time_base), tuple(pts), tuple(slots), exact)
    if info.vfr or not info.fps:
        why = f"its {info.frames} frames are at uneven times (variable frame rate)"
    else:
        why = (f"its frames are not on fixed {float(1 / info.fps) * 1000:.3f} ms slots from time 0 "
               f"(first frame at {info.frame_time(0):.3f} s)")
    raise InputError(f"{output}: AVI has only a fixed frame duration and {info.uri} does not fit it: {why}; "
                     "write .mp4 or .mkv to keep its timestamps")


def segment_muxer_options(time_base: Fraction) -> dict[str, str]:
    clock = str(time_base.denominator)
    return {"movie_timescale": clock, "video_track_timescale": clock}


def keeps_source_yuv(info: VideoInfo, opts: EncodeOptions) -> bool:
    """Whether segments of this source can be encoded from its decoded frames as they are (8-bit 4:2:0,
    even size, a yuv420p encoder): then only face pixels are converted (convert.paste_bgr_into_yuv420)
    and the output keeps the source's colour tags. Otherwise every frame goes through BGR and is
    written BT.709, TV range (FaceFusion's output settings)."""
    return (info.pix_fmt == "yuv420p" and opts.pix_fmt == "yuv420p"
            and info.coded_width % 2 == 0 and info.coded_height % 2 == 0)


def _colour_code(table: dict[int, str], name: str | None, default: int) -> int:
    return next((code for code, known in table.items() if known == name), default)


class SegmentWriter:
    """Incremental segment encoder: `with SegmentWriter(dest, info, opts) as w: w.write(image, pts)`.
    Frames are BGR uint8 in coded orientation, pts in the source time base, strictly increasing.
    With `source_yuv` (keeps_source_yuv) frames are the decoder's yuv420p frames, given to
    `write_frame`. Nothing appears at `dest` unless the block exits cleanly with at least one frame
    written."""

    def __init__(self, dest_uri: str | os.PathLike, info: VideoInfo, opts: EncodeOptions | None = None,
                 source_yuv: bool = False):
        self.dest = os.fspath(dest_uri)
        self.info = info
        self.opts = opts or EncodeOptions()
        self.source_yuv = source_yuv
        self.frames = 0
        self.first_pts: int | None = None
        self.last_pts: int | None = None
        self.result: SegmentInfo | None = None
        self.width, self.height = encoded_size(info)
        self._atomic = None
        self._container = None
        self._stream = None

    def __enter__(self) -> SegmentWriter:
        self._atomic = open_output_atomic(self.dest, suffix=".mp4")
        self._tmp = self._atomic.__enter__()
        try:
            self._open()
        except BaseException:
            self._atomic.__exit__(*sys.exc_info())
            raise
        return self

    def _open(self) -> None:
        info, opts = self.info, self.opts
        if opts.container == "avi":
            avi_clock(info, "the .avi output")  # fail on the first chunk, not at remux
        muxer_options = segment_muxer_options(info.time_base)
        container = av.open(self._tmp, "w", format="mp4", options=muxer_options)
        container.flags |= av.container.Flags.bitexact.value
        stream = container.add_stream(opts.encoder, rate=info.fps, options=opts.codec_options())
        stream.width, stream.height = self.width, self.height
        stream.pix_fmt = opts.pix_fmt
        stream.time_base = info.time_base
        ctx = stream.codec_context
        ctx.time_base = info.time_base
        ctx.thread_count = opts.threads
        ctx.flags |= av.codec.context.Flags.bitexact.value
        if opts.encoder == "mpeg4":
            ctx.qscale = True
        if self.source_yuv:  # the source's pixels, so its colour tags
            from ffray.media.probe import _PRIMARIES, _RANGE, _SPACE, _TRC

            colour = info.color or {}
            ctx.color_range = _colour_code(_RANGE, colour.get("range"), 0)
            ctx.colorspace = _colour_code(_SPACE, colour.get("space"), 2)
            ctx.color_primaries = _colour_code(_PRIMARIES, colour.get("primaries"), 2)
            ctx.color_trc = _colour_code(_TRC, colour.get("trc"), 2)
        else:
            ctx.color_range, ctx.colorspace = _TV_RANGE, _BT709
            ctx.color_primaries, ctx.color_trc = _BT709, _BT709
        if opts.encoder == "libx265":
            stream.codec_tag = "hvc1"  # the tag Apple players need (FaceFusion passes -tag:v hvc1)
        if info.display_matrix:
            stream.set_display_matrix(list(info.display_matrix))
        self._container, self._stream = container, stream
        try:
            ctx.open()
        except av.error.FFmpegError as exc:
            container.close()
            hint = ("; it needs an NVIDIA GPU with NVENC on the writer's node (give the writer pool a GPU "
                    "share with --writer-gpus; A100/H100 have no NVENC) or use libx264"
                    if opts.encoder in NVENC_ENCODERS else "")
            raise MediaError(self.dest, f"cannot open encoder {opts.encoder} ({exc}){hint}") from exc

    def write(self, image: np.ndarray, pts: int) -> None:
        """`image`: BGR uint8 at the coded size (resized here when that is odd) or already at the
        encoded size."""
        coded = (self.info.coded_height, self.info.coded_width, 3)
        encoded = (self.height, self.width, 3)
        if image.dtype != np.uint8 or image.shape not in (coded, encoded):
            raise ValueError(f"segment frame must be uint8 {coded} (BGR, coded orientation), "
                             f"got {image.dtype} {image.shape}")
        if image.shape != encoded:
            image = cv2.resize(image, (self.width, self.height), interpolation=cv2.INTER_LINEAR)
        self._encode(bgr_to_frame(image, self.opts.pix_fmt), pts)

    def write_frame(self, frame: av.VideoFrame, pts: int) -> None:
        """A yuv420p frame at the encoded size (a `source_yuv` writer): encoded as it is."""
        if not self.source_yuv or frame.format.name != "yuv420p" or (frame.width, frame.height) != (
                self.width, self.height):
            raise MediaError(self.info.uri, f"frame at pts {pts} is {frame.format.name} {frame.width}x{frame.height},"
                                            f" the segment is yuv420p {self.width}x{self.height}")
        frame.pict_type = av.video.frame.PictureType.NONE  # the encoder places keyframes, not the source
        self._encode(frame, pts)

    def _encode(self, frame: av.VideoFrame, pts: int) -> None:
        if self.last_pts is not None and pts <= self.last_pts:
            raise ValueError(f"segment pts must increase: {pts} after {self.last_pts}")
        frame.pts = int(pts)
        frame.time_base = self.info.time_base
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames += 1
        self.first_pts = pts if self.first_pts is None else self.first_pts
        self.last_pts = pts

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                if self.frames == 0:
                    raise MediaError(self.dest, "no frames were written to the segment")
                for packet in self._stream.encode(None):
                    self._container.mux(packet)
            self._container.close()
            if exc_type is None:
                self.result = SegmentInfo(self.dest, self.frames, self.first_pts, self.last_pts,
                                          sha256_and_size(self._tmp)[0], self.width, self.height)
        except BaseException:
            self._atomic.__exit__(*sys.exc_info())
            raise
        self._atomic.__exit__(exc_type, exc, tb)


def encode_segment(frames, dest_uri: str | os.PathLike, info: VideoInfo,
                   opts: EncodeOptions | None = None) -> SegmentInfo:
    """Encode an iterable of (image, pts) pairs (or Frame objects) into a segment at `dest_uri`."""
    with SegmentWriter(dest_uri, info, opts) as writer:
        for item in frames:
            if hasattr(item, "image"):
                writer.write(item.image, item.pts)
            else:
                image, pts = item
                writer.write(image, pts)
    return writer.result
