"""remux(source, segments, output): join encoded segments and the source's audio into the final file.

Video packets are copied in segment order (never re-encoded), with the source's exact timestamps
(mp4/mov clocks are set to the source time base; Matroska/WebM hold 1 ms; AVI holds frame slots of
one fixed duration, see encode.avi_clock, with empty chunks for skipped slots). Audio packets are
copied from the source untouched unless the output container cannot hold the codec; then that stream
is re-encoded (AAC for mp4/mov, Opus for webm, MP3 for avi), logged, and reported in OutputInfo.audio. The display
matrix (rotation) and container metadata are carried over. Output is written under a temporary name,
probed (frame count, timestamps, duration, encoded size) and only then renamed into place. A source
with an odd width or height comes out at the even size the segments were encoded at (see encode.py);
that is logged once per output and reported as OutputInfo.resized_from; so is a 10- or 12-bit source
written as 8-bit (OutputInfo.bit_depth_from, see convert.py). Given the same inputs
the bytes are the same (bitexact muxing, no wall-clock metadata), so a crashed job can redo it.
"""

from __future__ import annotations

import heapq
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import av
import numpy as np

from ffray.errors import InputError, MediaError, ProcessingError
from ffray.media.convert import bit_depth_note
from ffray.media.encode import (
    AviClock,
    avi_clock,
    encoded_size,
    output_container,
    segment_muxer_options,
)
from ffray.media.io import open_input, open_output_atomic, sha256_and_size
from ffray.media.probe import VideoInfo, probe
from ffray.media.trim import trimmed_audio, trimmed_info
from ffray.media.trim import window as trim_window

log = logging.getLogger(__name__)

# codecs each output muxer takes as-is; anything else is re-encoded to the container's default
AUDIO_COPYABLE = {
    "mp4": {"aac", "mp3", "mp2", "ac3", "eac3", "opus", "flac", "alac", "dts"},
    "mov": {"aac", "mp3", "mp2", "ac3", "eac3", "alac", "pcm_s16le", "pcm_s16be", "pcm_s24le", "pcm_f32le"},
    "matroska": None,  # takes everything FFmpeg can demux
    "webm": {"opus", "vorbis"},
    "avi": {"mp3", "mp2", "ac3", "aac", "pcm_s16le", "pcm_u8"},
}
AUDIO_REENCODE = {"mp4": "aac", "mov": "aac", "webm": "libopus", "matroska": "aac", "avi": "libmp3lame"}
AUDIO_REENCODE_BITRATE = 192_000
_DROP_CONTAINER_TAGS = {"encoder", "major_brand", "minor_version", "compatible_brands"}


@dataclass(frozen=True)
class OutputInfo:
    path: str
    frames: int
    duration: float
    video_codec: str
    segments: int
    audio: tuple[dict, ...] = field(default_factory=tuple)  # {index, codec, action: copied|re-encoded, ...}
    sha256: str = ""
    size: int = 0
    width: int = 0  # encoded (coded-orientation) size of the output
    height: int = 0
    resized_from: tuple[int, int] | None = None  # the source's coded size when it was odd
    bit_depth_from: int | None = None  # the source's bit depth when it was reduced to 8 (convert.py)

    @property
    def audio_reencoded(self) -> bool:
        return any(a["action"] == "re-encoded" for a in self.audio)


def remux(source_uri, segment_uris, output_uri, info: VideoInfo | None = None,
          audio: bool = True, tags: dict[str, str] | None = None,
          before_publish: Callable[[str], Any] | None = None, trim=None) -> OutputInfo:
    """Join `segment_uris` (in order) with the audio of `source_uri` into `output_uri`, atomically.
    `tags`: container metadata over the source's (the synthetic-media label); `before_publish(path)`
    runs on the finished local file before it takes the output's name (C2PA signing), so the output
    never exists unsigned. `trim` (ffray.media.trim.Trim): the segments hold only those frames; the
    output starts at 0 with the first and the audio is cut to match (see trim.py)."""
    source_uri, output_uri = os.fspath(source_uri), os.fspath(output_uri)
    segment_uris = [os.fspath(s) for s in segment_uris]
    if not segment_uris:
        raise ProcessingError(f"{output_uri}: no segments to remux")
    info = info or probe(source_uri)
    suffix, muxer = output_container(output_uri)
    written = trimmed_info(info, trim) if trim else info  # what the output must hold
    clock = avi_clock(written, output_uri) if muxer == "avi" else None
    width, height = encoded_size(info)
    resized_from = None
    if (width, height) != (info.coded_width, info.coded_height):
        resized_from = (info.coded_width, info.coded_height)
        log.warning("%s: odd frame size %dx%d; %s is encoded at %dx%d (resized bilinearly, as FaceFusion does)",
                    source_uri, info.coded_width, info.coded_height, output_uri, width, height)
    note = bit_depth_note(info)
    if note:
        log.warning("%s: %s", source_uri, note)
    with open_output_atomic(output_uri, suffix=suffix) as tmp:
        report = _write(tmp, muxer, source_uri, segment_uris, info, audio, clock, output_uri, tags or {}, trim)
        result = _verify(tmp, output_uri, written, muxer, clock)
        if before_publish is not None:
            before_publish(tmp)
        result = OutputInfo(path=output_uri, frames=result.frames, duration=result.duration,
                            video_codec=result.codec, segments=len(segment_uris), audio=tuple(report),
                            sha256=sha256_and_size(tmp)[0], size=os.path.getsize(tmp),
                            width=result.coded_width, height=result.coded_height, resized_from=resized_from,
                            bit_depth_from=info.bit_depth if note else None)
    return result


def _write(tmp: str, muxer: str, source_uri: str, segment_uris: list[str], info: VideoInfo,
           with_audio: bool, clock: AviClock | None, output_uri: str, tags: dict[str, str],
           trim=None) -> list[dict]:
    options = segment_muxer_options(info.time_base) if muxer in ("mp4", "mov") else {}
    if muxer == "avi":
        # AVI places audio by packet count, not time: shifting everything so that an encoder-delayed
        # audio start (negative pts) becomes 0 would move video frames into the wrong slots
        options["avoid_negative_ts"] = "disabled"
    output = av.open(tmp, "w", format=muxer, options=options)
    try:
        output.flags |= av.container.Flags.bitexact.value
        with open_input(segment_uris[0]) as first:
            template = first.streams.video[0]
            out_video = output.add_stream_from_template(template)
            extradata = template.codec_context.extradata
            codec_name = template.codec_context.name
        out_video.time_base = clock.time_base if clock else info.time_base
        if clock:
            if codec_name != "mpeg4":
                raise InputError(f"{output_uri}: AVI output needs MPEG-4 Part 2 segments (encoder mpeg4, "
                                 f"as EncodeOptions.for_output picks); these are {codec_name}")
            out_video.codec_tag = "FMP4"  # FFmpeg's own tag: XVID/DIVX switch on decoder workarounds
        if info.display_matrix:
            out_video.set_display_matrix(list(info.display_matrix))
        if codec_name == "hevc" and muxer in ("mp4", "mov"):
            out_video.codec_tag = "hvc1"
        output.metadata.update({k: v for k, v in _source_metadata(source_uri).items()
                                if k.lower() not in _DROP_CONTAINER_TAGS})
        output.metadata.update(tags)  # the synthetic-media label wins over the source's own comment

        audio_sources, report = [], []
        if with_audio:
            for audio_info in info.audio:
                if trim:  # cut to the frames' time range, sample-exact (re-encoded, see trim.py)
                    entry = {"index": audio_info.index, "codec": audio_info.codec}
                    audio_sources.append(trimmed_audio(output, source_uri, audio_info, muxer,
                                                       *trim_window(info, trim), entry))
                    report.append(entry)
                    continue
                copy = AUDIO_COPYABLE[muxer] is None or audio_info.codec in AUDIO_COPYABLE[muxer]
                packets = (_copied_audio if copy else _reencoded_audio)(output, source_uri, audio_info.index, muxer)
                audio_sources.append(packets)
                entry = {"index": audio_info.index, "codec": audio_info.codec,
                         "action": "copied" if copy else "re-encoded"}
                if not copy:
                    entry["to"] = AUDIO_REENCODE[muxer]
                    log.warning("%s: audio stream %d (%s) cannot go into %s; re-encoding it to %s",
                                source_uri, audio_info.index, audio_info.codec, muxer, AUDIO_REENCODE[muxer])
                report.append(entry)
        # start the audio generators (they add their streams) before the header is written
        primed = [_prime(gen) for gen in audio_sources]
        output.start_encoding()
        video = _segment_packets(segment_uris, out_video, extradata, info, clock,
                                 shift=info.frame_pts[trim.start] if trim else 0)
        for _, _, packet in heapq.merge(video, *primed, key=lambda item: (item[0], item[1])):
            output.mux(packet)
        output.close()
        output = None
        return report
    finally:
        if output is not None:
            output.close()


def _prime(generator):
    """Run a generator up to its first yield (which only sets up its output stream), then replay."""
    first = next(generator)
    assert first is None

    def rest():
        yield from generator
    return rest()


def _source_metadata(source_uri: str) -> dict:
    with open_input(source_uri) as container:
        return dict(container.metadata)


def _packet_time(packet) -> Fraction:
    ts = packet.dts if packet.dts is not None else packet.pts
    return Fraction(ts or 0) * packet.time_base


def _segment_packets(segment_uris, out_video, extradata, info: VideoInfo,
                     clock: AviClock | None = None, shift: int = 0) -> Iterator[tuple]:
    """`shift`: subtracted from every timestamp (a trimmed output starts at 0)."""
    last_dts = None
    previous_last_pts = None
    slot_of = clock.slot_of() if clock else None
    if clock and clock.slots[0] > 0:
        # AVI time starts at slot 0: an empty chunk there, and the muxer fills the rest as skipped
        lead = av.Packet(0)
        lead.stream, lead.pts, lead.dts, lead.time_base = out_video, 0, 0, clock.time_base
        yield Fraction(0), 0, lead
    for order, uri in enumerate(segment_uris):
        with open_input(uri) as container:
            stream = container.streams.video[0]
            if stream.codec_context.extradata != extradata:
                raise ProcessingError(f"{uri}: segment was encoded with different settings than "
                                      f"{segment_uris[0]} (codec headers differ); re-encode it")
            first_pts = last_pts = None
            for packet in container.demux(stream):
                if packet.size == 0 or packet.pts is None:
                    continue
                # timestamps in the output clock (the source time base), exact
                pts = Fraction(packet.pts) * packet.time_base / info.time_base
                raw_dts = packet.dts if packet.dts is not None else packet.pts
                dts = Fraction(raw_dts) * packet.time_base / info.time_base
                if pts.denominator != 1 or dts.denominator != 1:
                    raise ProcessingError(f"{uri}: segment timestamps are not in the source time base")
                pts, dts = int(pts) - shift, int(dts) - shift
                first_pts = pts if first_pts is None else min(first_pts, pts)
                last_pts = pts if last_pts is None else max(last_pts, pts)
                if previous_last_pts is not None and pts <= previous_last_pts:
                    raise ProcessingError(f"{uri}: segment {order} has a frame at pts {pts}, not after the "
                                          f"previous segment's last frame (pts {previous_last_pts})")
                if last_dts is not None and dts <= last_dts:
                    dts = last_dts + 1  # two encoders' B-frame delays meet at a segment boundary
                if dts > pts:
                    raise ProcessingError(f"{uri}: cannot join segment {order} without reordering frames "
                                          "(decode timestamps overlap the previous segment)")
                last_dts = dts
                packet.stream = out_video
                if slot_of is not None:
                    if dts != pts or pts not in slot_of:
                        raise ProcessingError(f"{uri}: segment {order} cannot go into AVI (frame at pts {pts} "
                                              "is reordered or not a source frame)")
                    slot = slot_of[pts]
                    packet.pts = packet.dts = slot
                    packet.duration = 1
                    packet.time_base = clock.time_base
                    yield slot * clock.time_base, 0, packet
                    continue
                duration = round(Fraction(packet.duration or 0) * packet.time_base / info.time_base)
                packet.pts, packet.dts, packet.duration = pts, dts, duration
                packet.time_base = info.time_base
                yield dts * info.time_base, 0, packet
            if last_pts is None:
                raise ProcessingError(f"{uri}: segment {order} has no video packets")
            previous_last_pts = last_pts


def _copied_audio(output, source_uri: str, index: int, muxer: str):
    with open_input(source_uri) as container:
        stream = container.streams[index]
        for other in container.streams:
            if other.index != index:
                other.discard = av.stream.Discard.all
        out_stream = output.add_stream_from_template(stream)
        if stream.language:
            out_stream.metadata["language"] = stream.language
        yield None
        for packet in container.demux(stream):
            if packet.size == 0:
                continue
            packet.stream = out_stream
            yield _packet_time(packet), 1 + index, packet


def _reencoded_audio(output, source_uri: str, index: int, muxer: str):
    encoder = AUDIO_REENCODE[muxer]
    with open_input(source_uri) as container:
        stream = container.streams[index]
        for other in container.streams:
            if other.index != index:
                other.discard = av.stream.Discard.all
        rate = 48000 if encoder == "libopus" else stream.codec_context.sample_rate
        out_stream = output.add_stream(encoder, rate=rate)
        out_stream.layout = stream.codec_context.layout.name if stream.codec_context.channels <= 2 else "stereo"
        out_stream.bit_rate = AUDIO_REENCODE_BITRATE
        out_stream.codec_context.flags |= av.codec.context.Flags.bitexact.value
        if stream.language:
            out_stream.metadata["language"] = stream.language
        yield None
        resampler = av.AudioResampler(format=out_stream.codec_context.format.name,
                                      layout=out_stream.layout.name, rate=rate)
        start = None
        samples = 0
        time_base = Fraction(1, rate)
        for frame in container.decode(stream):
            if start is None:
                start = round((Fraction(frame.pts or 0) * frame.time_base) / time_base)
            for converted in resampler.resample(frame):
                converted.pts = start + samples
                converted.time_base = time_base
                samples += converted.samples
                for packet in out_stream.encode(converted):
                    yield _packet_time(packet), 1 + index, packet
        for converted in resampler.resample(None):
            converted.pts = (start or 0) + samples
            converted.time_base = time_base
            samples += converted.samples
            for packet in out_stream.encode(converted):
                yield _packet_time(packet), 1 + index, packet
        for packet in out_stream.encode(None):
            yield _packet_time(packet), 1 + index, packet


def _verify(tmp: str, output_uri: str, info: VideoInfo, muxer: str, clock: AviClock | None = None) -> VideoInfo:
    """Probe the written file: it must have exactly the source's frames at the source's times."""
    try:
        out = probe(tmp)
    except MediaError as exc:
        raise MediaError(output_uri, f"remuxed output is unreadable ({exc.problem})") from exc
    if out.frames != info.frames:
        raise MediaError(output_uri, f"remuxed output has {out.frames} frames, source has {info.frames}")
    src_times = np.array([float(p * info.time_base) for p in info.frame_pts])
    out_times = np.array([float(p * out.time_base) for p in out.frame_pts])
    if clock is not None:
        tolerance = 1e-9 if clock.exact else float(info.time_base) / 2 + 1e-9
    else:
        tolerance = 1e-9 if muxer in ("mp4", "mov") else 0.0005 + float(info.time_base) / 2
    worst = float(np.max(np.abs(src_times - out_times)))
    if worst > tolerance:
        raise MediaError(output_uri, f"remuxed frame timestamps drift from the source by up to {worst:.6f}s")
    frame_interval = float(1 / info.fps) if info.fps else 0.04
    if abs(out.duration - info.duration) > frame_interval + 0.002:
        raise MediaError(output_uri, f"remuxed duration {out.duration:.3f}s differs from the source's "
                                     f"{info.duration:.3f}s")
    if (out.coded_width, out.coded_height) != encoded_size(info):
        raise MediaError(output_uri, "remuxed frame size {}x{} is not the encoded size {}x{}".format(
            out.coded_width, out.coded_height, *encoded_size(info)))
    if info.rotation != out.rotation:
        raise MediaError(output_uri, f"rotation {out.rotation} lost (source {info.rotation})")
    return out
