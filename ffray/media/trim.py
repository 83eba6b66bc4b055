"""Trim: process and write only frames [start, end) of a video, as FaceFusion's --trim-frame-start /
--trim-frame-end do (start inclusive, end exclusive, frame numbers in presentation order from 0).

The chunk plan is the whole video's plan (plan_chunks) with the chunks outside the range dropped and
the first and last cut to it (each cut chunk decodes from the last keyframe at or before its new
start; a cut piece shorter than a quarter chunk is folded into its neighbour). The output starts at
time 0 with the source's frame `start`: every video timestamp is shifted by that frame's pts (the
frame times and durations are otherwise the source's).

Audio is cut to the same time range, [time of frame start, time of frame end) (the end of the last
frame when the range runs to the end of the video), sample-exact: decoded, cut and re-encoded. The
decode starts half a second before the range (a seek; the decoder has settled by the range) where the
stream's clock resolves single samples, as mp4/mov's does, else at the stream start (Matroska's 1 ms
would misplace the samples after a seek by up to 48). The encoder is the source's codec where this
FFmpeg has one and the output container takes it (else the container's default, as remux's), at the
source's bit rate but at least 192 kb/s; FLAC, ALAC and PCM stay lossless. Copying the compressed
packets instead would cut only at packet boundaries (AAC: 1024 samples, 21 ms at 48 kHz; MP3: 1152),
leave the first packet without the one before it (its overlap-add or bit reservoir missing: 21 ms of
garbage, measured ~1 dB SNR against a sequential decode), and only mp4/mov could hide the surplus in an
edit list. FaceFusion re-encodes the trimmed audio too (`-ss/-to` on the target input). The encoder
runs single-threaded with FFmpeg's bitexact flag: a rerun writes the same bytes.
"""

from __future__ import annotations

import bisect
import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from ffray.errors import InputError

log = logging.getLogger(__name__)

START_FLAG = "--trim-frame-start"
END_FLAG = "--trim-frame-end"
# manifest option names (CSV columns / JSONL "options" keys) for the two flags; '-' or '_' alike
MANIFEST_KEYS = ("trim_frame_start", "trim_frame_end")
AUDIO_PREROLL_S = Fraction(1, 2)  # decoded before the range and dropped: decoders settle well within it
TRIM_AUDIO_MIN_BITRATE = 192_000
# source codec -> the encoder that writes it again
SAME_CODEC_ENCODER = {"aac": "aac", "mp3": "libmp3lame", "opus": "libopus", "vorbis": "libvorbis",
                      "flac": "flac", "alac": "alac", "ac3": "ac3", "eac3": "eac3", "mp2": "mp2"}
LOSSLESS = {"flac", "alac"}
MAX_BITRATE = {"libmp3lame": 320_000, "mp2": 384_000, "ac3": 640_000, "libopus": 510_000}
OPUS_RATES = (8000, 12000, 16000, 24000, 48000)


@dataclass(frozen=True)
class Trim:
    start: int  # first frame written
    end: int  # exclusive

    @property
    def frames(self) -> int:
        return self.end - self.start

    def to_json(self) -> list[int]:
        return [self.start, self.end]


# --- options ---------------------------------------------------------------------------------------


def frame_number(value: Any, flag: str) -> int | None:
    """A frame number given as an int or text ('' and None: not given); InputError when it is not a
    whole number >= 0."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        raise InputError(f"{flag} {value!r}: expected a frame number (a whole number >= 0)")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str):
        text = value.strip()
        try:
            value = int(text)
        except ValueError:
            raise InputError(f"{flag} {text}: expected a frame number (a whole number >= 0)") from None
    if not isinstance(value, int):
        raise InputError(f"{flag} {value!r}: expected a frame number (a whole number >= 0)")
    if value < 0:
        raise InputError(f"{flag} {value}: frame numbers start at 0")
    return value


def check_trim(start: Any, end: Any, names: tuple[str, str] = (START_FLAG, END_FLAG)
               ) -> tuple[int | None, int | None]:
    """(start, end) as given (None: not given), checked without the video: whole numbers >= 0 and
    start < end. InputError, naming the flags (or manifest columns) `names`, otherwise."""
    start, end = frame_number(start, names[0]), frame_number(end, names[1])
    if start is not None and end is not None and start >= end:
        raise InputError(f"{names[0]} {start} {names[1]} {end}: the start must be before the end "
                         "(the range is [start, end), end exclusive)")
    if end == 0:
        raise InputError(f"{names[1]} 0: the range [start, end) would hold no frame")
    return start, end


def pop_manifest_trim(options: dict[str, Any]) -> tuple[int | None, int | None]:
    """Take the trim columns/keys out of a manifest row's options (the rest are face options) and
    check them as check_trim does. `trim-frame-start` and `trim_frame_start` are the same option."""
    found: dict[str, Any] = {}
    for key in list(options):
        name = key.replace("-", "_")
        if name in MANIFEST_KEYS:
            found[name] = options.pop(key)
    return check_trim(found.get(MANIFEST_KEYS[0]), found.get(MANIFEST_KEYS[1]), MANIFEST_KEYS)


def row_trim(request, start: int | None, end: int | None):
    """A manifest row's request with the command line's trim (`start`, `end`) wherever the row gives
    none of its own; InputError when the two together are no range."""
    merged = (start if request.trim_start is None else request.trim_start,
              end if request.trim_end is None else request.trim_end)
    if merged == (request.trim_start, request.trim_end):
        return request
    merged = check_trim(*merged, names=("trim start", "trim end"))
    return dataclasses.replace(request, trim_start=merged[0], trim_end=merged[1])


def add_trim_arguments(parser) -> None:
    g = parser.add_argument_group("trim (FaceFusion's frame range: only these frames are processed and written)")
    # plain text, checked by check_trim: a bad value is one `ffray: error:` line (exit 2) like every input error
    g.add_argument(START_FLAG, dest="trim_frame_start", default=None, metavar="N",
                   help="first frame to process and write (from 0, presentation order, as `ffray faces --frame` "
                        "counts); the output starts at time 0 with this frame and the audio is cut to match "
                        "(default: 0)")
    g.add_argument(END_FLAG, dest="trim_frame_end", default=None, metavar="N",
                   help="frame to stop before (exclusive: frames start..N-1 are written); at most the video's "
                        "frame count (default: the end of the video)")


def resolve_trim(info, start: int | None, end: int | None, target: str) -> Trim | None:
    """The range to process for this video, or None for the whole of it (no trim given, or one that
    covers every frame: the output is then the untrimmed one). InputError when it does not fit."""
    if start is None and end is None:
        return None
    frames = info.frames
    first, stop = start or 0, frames if end is None else end
    if end is not None and end > frames:
        raise InputError(f"{target}: {END_FLAG} {end}: the video has {frames} frames (0-{frames - 1}); "
                         f"the end is exclusive, at most {frames}")
    if first >= stop:
        raise InputError(f"{target}: {START_FLAG} {first}: the video has {frames} frames (0-{frames - 1})"
                         if end is None else
                         f"{target}: {START_FLAG} {first} {END_FLAG} {stop}: the start must be before the end")
    if not info.exact_seek and info.frames and first > 0:
        log.info("%s: timestamps unusable for seeking: the trim decodes from the start of the stream", target)
    if (first, stop) == (0, frames):
        return None
    return Trim(first, stop)


# --- chunk plan ------------------------------------------------------------------------------------


def trim_plan(chunks: Sequence, info, trim: Trim | None, chunk_frames: int) -> list:
    """The whole video's plan (plan_chunks) cut to `trim`: chunks outside it dropped, the first and last
    cut to it, a cut piece shorter than chunk_frames // 4 folded into its neighbour, indices from 0."""
    if trim is None:
        return list(chunks)
    bounds = [(max(c.start, trim.start), min(c.end, trim.end), c) for c in chunks
              if c.end > trim.start and c.start < trim.end]
    sliver = max(1, chunk_frames // 4)
    if len(bounds) > 1 and bounds[0][1] - bounds[0][0] < sliver:
        bounds[:2] = [(bounds[0][0], bounds[1][1], bounds[0][2])]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < sliver:
        bounds[-2:] = [(bounds[-2][0], bounds[-1][1], bounds[-2][2])]
    keyframes = sorted(set(info.keyframes))
    key_dts = dict(zip(info.keyframes, info.keyframe_dts, strict=False))
    out = []
    for index, (start, end, chunk) in enumerate(bounds):
        if (start, end) == (chunk.start, chunk.end):
            out.append(dataclasses.replace(chunk, index=index))
            continue
        out.append(_cut(chunk, info, index, start, end, keyframes, key_dts))
    return out


def _cut(chunk, info, index: int, start: int, end: int, keyframes: list[int], key_dts: dict):
    """`chunk` (its stream, clock, seek mode) for frames [start, end), built as plan_chunks builds one."""
    from ffray.media.chunks import chunk_id

    pts = info.frame_pts
    if chunk.exact_seek:
        k = bisect.bisect_right(keyframes, start) - 1
        seek_frame = keyframes[k] if k >= 0 else 0
    else:
        seek_frame = 0  # decoded by counting from the stream start (decode._decode_pyav_by_count)
    return dataclasses.replace(
        chunk, id=chunk_id(info.content_hash, start, end), index=index, start=start, end=end,
        seek_frame=seek_frame, start_pts=pts[start], end_pts=pts[end] if end < info.frames else None,
        seek_pts=pts[seek_frame], frame_pts=tuple(pts[start:end]), lead_pts=tuple(pts[seek_frame:start]),
        seek_dts=key_dts.get(seek_frame))


def plan_trim(plan: Sequence, info) -> Trim | None:
    """The range a (trimmed) plan covers; None when it is the whole video."""
    if not plan:
        return None
    start, end = plan[0].start, plan[-1].end
    return None if (start, end) == (0, info.frames) else Trim(start, end)


# --- output timing ---------------------------------------------------------------------------------


def window(info, trim: Trim) -> tuple[Fraction, Fraction]:
    """(start, end) seconds in the source's clock: frame `start`'s time to frame `end`'s (the end of
    the last frame when the range runs to the end of the video)."""
    pts = info.frame_pts
    end = pts[trim.end] if trim.end < info.frames else info.end_pts
    return pts[trim.start] * info.time_base, end * info.time_base


def trimmed_info(info, trim: Trim):
    """What the trimmed output holds: frames start..end-1, moved so that the first is at time 0."""
    t0, t1 = window(info, trim)
    shift = info.frame_pts[trim.start]
    keyframes = [k - trim.start for k in info.keyframes if trim.start <= k < trim.end]
    return info.replace(frames=trim.frames, duration=float(t1 - t0),
                        frame_pts=tuple(p - shift for p in info.frame_pts[trim.start:trim.end]),
                        keyframes=tuple(keyframes), keyframe_dts=())


# --- audio -----------------------------------------------------------------------------------------


def trim_audio_encoder(codec: str, muxer: str) -> str:
    """The encoder for a cut of `codec` audio in `muxer`: the same codec where possible."""
    import av

    from ffray.media.remux import AUDIO_COPYABLE, AUDIO_REENCODE

    takes = AUDIO_COPYABLE[muxer]
    if codec.startswith("pcm_") and (takes is None or codec in takes) and codec in av.codecs_available:
        return codec
    encoder = SAME_CODEC_ENCODER.get(codec)
    if encoder and encoder in av.codecs_available and (takes is None or codec in takes):
        return encoder
    return AUDIO_REENCODE[muxer]


def trimmed_audio(output, source_uri: str, audio_info, muxer: str, start: Fraction, end: Fraction,
                  report: dict):
    """remux's audio generator for a trimmed output: stream `audio_info` of `source_uri`, the samples of
    seconds [start, end) at output time 0 (see module doc). The first yield (None) only adds the output
    stream; `report` gets what was done."""
    import av

    from ffray.media.io import open_input

    index = audio_info.index
    encoder = trim_audio_encoder(audio_info.codec, muxer)
    with open_input(source_uri) as container:
        stream = container.streams[index]
        ctx = stream.codec_context
        in_rate, channels, layout = ctx.sample_rate, ctx.channels, ctx.layout.name
        bit_rate = int(ctx.bit_rate or stream.bit_rate or 0)
        # a seek can start the decode only where timestamps resolve single samples: after one, the first
        # frame's timestamp places every sample (Matroska's 1 ms would put them up to 48 samples off)
        exact_times = stream.time_base is not None and stream.time_base <= Fraction(1, in_rate)
    rate = in_rate if encoder != "libopus" or in_rate in OPUS_RATES else 48000
    out_stream = output.add_stream(encoder, rate=rate)
    multichannel = encoder in ("aac", "flac", "alac", "ac3", "eac3") or encoder.startswith("pcm_")
    out_stream.layout = layout if channels <= 2 or multichannel else "stereo"
    out_ctx = out_stream.codec_context
    if encoder not in LOSSLESS and not encoder.startswith("pcm_"):
        wanted = max(bit_rate, TRIM_AUDIO_MIN_BITRATE)
        out_stream.bit_rate = min(wanted, MAX_BITRATE.get(encoder, wanted))
    out_ctx.flags |= av.codec.context.Flags.bitexact.value
    out_ctx.thread_count = 1
    if audio_info.language:
        out_stream.metadata["language"] = audio_info.language
    report.update({"action": "re-encoded", "to": encoder, "cut": [float(start), float(end)]})
    yield None
    resampler = av.AudioResampler(format=out_ctx.format.name, layout=out_stream.layout.name, rate=rate)
    out_base = Fraction(1, rate)
    first_out = 0  # output sample (at `rate`) of the first sample kept: > 0 when the audio starts later
    written = 0

    def encode(frame):
        nonlocal written
        for converted in resampler.resample(frame):
            converted.pts = first_out + written
            converted.time_base = out_base
            written += converted.samples
            for packet in out_stream.encode(converted):
                yield _time(packet), 1 + index, packet

    started = False
    for piece, first in _cut_frames(source_uri, index, start, end, in_rate, may_seek=exact_times):
        if not started:
            first_out, started = round(Fraction(first * rate, in_rate)), True
        yield from encode(piece)
    if started:
        yield from encode(None)
    report["samples"] = written  # 0: the source has no audio in the range (the output then has none)
    for packet in out_stream.encode(None):
        yield _time(packet), 1 + index, packet


def _time(packet) -> Fraction:
    ts = packet.dts if packet.dts is not None else packet.pts
    return Fraction(ts or 0) * packet.time_base


def _cut_frames(source_uri: str, index: int, start: Fraction, end: Fraction, rate: int, may_seek: bool = True):
    """(frame, first sample relative to `start`) for the decoded samples in [start, end): frames are
    cut at sample precision. Samples are placed by the first decoded frame's timestamp and counted
    from there (as remux's re-encode does), so timestamp jitter in the source cannot open gaps.
    Decoding starts AUDIO_PREROLL_S before the range (a seek, when `may_seek`), or at the stream start
    when the range starts sooner or the seek lands after it."""
    import av

    from ffray.errors import MediaError
    from ffray.media.io import open_input

    a, b = round(start * rate), round(end * rate)
    seek = start - AUDIO_PREROLL_S
    for seeking in (True, False) if seek > 0 and may_seek else (False,):
        with open_input(source_uri) as container:
            stream = container.streams[index]
            for other in container.streams:
                if other.index != index:
                    other.discard = av.stream.Discard.all
            position = None
            try:
                if seeking:
                    container.seek(int(seek / stream.time_base), stream=stream, backward=True, any_frame=False)
                for frame in container.decode(stream):
                    if position is None:
                        if frame.pts is None:
                            raise MediaError(source_uri, f"audio stream {index}: a frame without a timestamp")
                        position = round(Fraction(frame.pts) * frame.time_base * rate)
                        if seeking and position > a:
                            break  # landed after the range's start: decode from the stream start
                    lo, hi = position, position + frame.samples
                    position = hi
                    if hi <= a:
                        continue
                    if lo >= b:
                        return
                    if lo >= a and hi <= b:
                        frame.pts = None
                        yield frame, lo - a
                    else:
                        yield _slice(frame, max(a, lo) - lo, min(b, hi) - lo), max(a, lo) - a
                else:
                    return
            except av.error.FFmpegError as exc:
                raise MediaError(source_uri, f"audio stream {index}: cannot decode it "
                                             f"({exc.strerror or exc})") from exc


def _slice(frame, i: int, j: int):
    """Samples i..j-1 of an audio frame, as a new frame of the same format, layout and rate."""
    import av
    import numpy as np

    data = frame.to_ndarray()
    if frame.format.is_planar:
        data = data[:, i:j]
    else:
        channels = data.shape[1] // frame.samples
        data = data[:, i * channels:j * channels]
    piece = av.AudioFrame.from_ndarray(np.ascontiguousarray(data), format=frame.format.name,
                                       layout=frame.layout.name)
    piece.sample_rate = frame.sample_rate
    return piece
