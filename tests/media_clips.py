"""Tiny test videos made with PyAV, for tests that need a clip with a particular property.

Each generator writes a real encoded file and returns its path. Frames are deterministic (a seeded
pattern that moves), so two calls with the same arguments give the same pixels.
"""

from __future__ import annotations

import contextlib
from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def pattern(index: int, width: int, height: int) -> np.ndarray:
    """BGR uint8 frame `index`: smooth gradients plus a moving block and a little seeded noise, so that
    consecutive frames differ and an encoder has real work to do."""
    y, x = np.mgrid[0:height, 0:width]
    image = np.empty((height, width, 3), np.uint8)
    image[..., 0] = (x * 255 // max(1, width - 1) + index * 3) % 256
    image[..., 1] = (y * 255 // max(1, height - 1) + index * 5) % 256
    image[..., 2] = ((x + y + index * 7) * 2) % 256
    bx = (index * 3) % max(1, width - 12)
    by = (index * 2) % max(1, height - 12)
    image[by:by + 12, bx:bx + 12] = (index * 37 % 256, 255 - index * 11 % 256, 128)
    noise = np.random.default_rng(index).integers(0, 6, (height, width, 3), dtype=np.uint8)
    return image + noise


def smooth_pattern(index: int, width: int, height: int) -> np.ndarray:
    """BGR uint8 frame `index` of a smooth scene drifting about a pixel per frame, with detail in
    brightness and only slow colour changes: what camera footage looks like to a 4:2:0 encoder,
    so PSNR measures the pipeline rather than the content."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    luma = 128 + 80 * np.sin(2 * np.pi * (x + 1.5 * index) / 37) * np.cos(2 * np.pi * (y + 0.7 * index) / 29)
    tint_x = 25 * np.cos(2 * np.pi * x / max(width, 1))
    tint_y = 25 * np.sin(2 * np.pi * y / max(height, 1))
    image = np.stack([luma + tint_x, luma - 0.5 * (tint_x + tint_y), luma + tint_y], axis=-1)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def make_clip(
    path: str | Path,
    *,
    frames: int = 30,
    width: int = 64,
    height: int = 48,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    time_base: Fraction = Fraction(1, 12800),
    pts: list[int] | None = None,
    fps: Fraction = Fraction(25),
    gop: int = 12,
    bframes: int = 2,
    rotation: int | None = None,
    options: dict | None = None,
    audio: str | None = None,
    audio_rate: int = 48000,
    container_format: str | None = None,
    smooth: bool = False,
) -> Path:
    """Encode `frames` pattern frames. `pts` (in `time_base` units) makes a VFR clip; else CFR at `fps`.
    `rotation` sets the display matrix (counter-clockwise degrees, as PyAV's `set_display_rotation`).
    `audio` adds a sine-tone stream with that encoder (e.g. "aac", "libopus", "libmp3lame").
    `smooth` draws `smooth_pattern` instead, for tests that measure PSNR (the default pattern's
    colour edges and flicker are deliberately hard: 4:2:0 alone costs it ~25 dB)."""
    path = Path(path)
    if pts is None:
        step = Fraction(1) / (fps * time_base)
        pts = [round(i * step) for i in range(frames)]
    muxer_options = {}
    if path.suffix in (".mp4", ".mov") and time_base.numerator == 1:
        # the default 1 ms movie clock would round a start offset in the edit list
        muxer_options["movie_timescale"] = str(time_base.denominator)
    out = av.open(str(path), "w", format=container_format, options=muxer_options)
    stream = out.add_stream(codec, rate=fps)
    stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
    stream.time_base = time_base
    stream.codec_context.time_base = time_base
    stream.thread_count = 1
    opts = {"g": str(gop), "bf": str(bframes)}
    if codec == "libx264":
        opts.update({"preset": "veryfast", "crf": "18"})
    if codec == "libx265":
        opts.update({"preset": "ultrafast", "crf": "20", "x265-params": f"keyint={gop}:bframes={bframes}:log-level=error"})
    opts.update(options or {})
    stream.options = opts
    if rotation is not None:
        stream.set_display_rotation(rotation)
    astream = None
    if audio:
        astream = out.add_stream(audio, rate=audio_rate)
        astream.layout = "stereo"
    for i, p in enumerate(pts):
        image = (smooth_pattern if smooth else pattern)(i, width, height)
        frame = av.VideoFrame.from_ndarray(image, format="bgr24")
        frame = frame.reformat(format=pix_fmt)
        frame.pts = p
        frame.time_base = time_base
        for packet in stream.encode(frame):
            out.mux(packet)
    for packet in stream.encode():
        out.mux(packet)
    if astream is not None:
        duration = float((pts[-1] * time_base) + 1 / fps)
        _write_tone(out, astream, duration)
    out.close()
    return path


def _write_tone(out, astream, seconds: float) -> None:
    rate = astream.codec_context.sample_rate
    fmt = astream.codec_context.format.name
    total = int(seconds * rate)
    block = 1024
    t = np.arange(total) / rate
    tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    for start in range(0, total, block):
        chunk = np.stack([tone[start:start + block]] * 2)
        frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo")
        frame.sample_rate = rate
        frame.pts = start
        frame.time_base = Fraction(1, rate)
        if fmt != "fltp":
            for f in _resample(frame, astream):
                for packet in astream.encode(f):
                    out.mux(packet)
            continue
        for packet in astream.encode(frame):
            out.mux(packet)
    for packet in astream.encode():
        out.mux(packet)


def _resample(frame, astream):
    resampler = av.AudioResampler(format=astream.codec_context.format.name, layout="stereo",
                                  rate=astream.codec_context.sample_rate)
    return resampler.resample(frame)


# name -> keyword arguments for make_clip: the awkward cases frame-exact decoding must survive
CLIP_CASES = {
    "bframes": dict(frames=40, gop=10, bframes=3, options={"x264-params": "b-pyramid=normal"}),
    "open_gop": dict(frames=40, gop=8, bframes=3, options={"x264-params": "open-gop=1:scenecut=0"}),
    "long_gop": dict(frames=45, gop=300, bframes=2),
    "vfr": dict(frames=36, time_base=Fraction(1, 90000),
                pts=[i * 3600 + (i * i * 97) % 2400 + (4000 if i > 20 else 0) for i in range(36)]),
    "odd_size": dict(frames=25, width=65, height=49, pix_fmt="yuv444p", gop=9),
    "rotated": dict(frames=24, width=64, height=48, rotation=90, gop=8),
    "ten_bit": dict(frames=24, width=64, height=48, codec="libx265", pix_fmt="yuv420p10le", gop=10),
    "ntsc_offset": dict(frames=30, time_base=Fraction(1, 30000),
                        pts=[1001 * (i + 1) for i in range(30)], gop=10),
}


def make_case(name: str, folder: str | Path, **overrides) -> Path:
    kwargs = dict(CLIP_CASES[name])
    kwargs.update(overrides)
    return make_clip(Path(folder) / f"{name}.mp4", **kwargs)


# ---------------------------------------------------------------- Theora in Ogg
#
# PyAV wheels are often built without libtheora. When the system has libtheora (libtheoraenc +
# libogg), theora_ogg_clip drives it through ctypes exactly as FFmpeg's libtheora wrapper does
# (codec time base as the Theora frame rate, keyframe granule shift ceil(log2(gop)), a forced
# keyframe every gop frames, 200 kb/s by default, packet pts = frame pts, key flag from the granule,
# zero-byte packets for frames the rate control drops) and lets FFmpeg's ogg muxer write the file.

def theora_encoder() -> str | None:
    """'pyav' when PyAV's FFmpeg has libtheora, 'ctypes' when the system libtheora is loadable, else None."""
    try:
        av.codec.Codec("libtheora", "w")
        return "pyav"
    except Exception:  # noqa: BLE001 - any failure means "not in this build"
        pass
    try:
        _theora_libs()
        return "ctypes"
    except OSError:
        return None


def _theora_libs():
    import ctypes
    import ctypes.util

    handles = []
    for name in ("ogg", "theoradec", "theoraenc"):  # load order: each needs the previous ones' symbols
        found = ctypes.util.find_library(name)
        if not found:
            raise OSError(f"lib{name} not found")
        handles.append(ctypes.CDLL(found, mode=ctypes.RTLD_GLOBAL))
    return handles


def _theora_structs():
    import ctypes as c

    class Info(c.Structure):
        _fields_ = [("version_major", c.c_ubyte), ("version_minor", c.c_ubyte), ("version_subminor", c.c_ubyte),
                    ("frame_width", c.c_uint32), ("frame_height", c.c_uint32), ("pic_width", c.c_uint32),
                    ("pic_height", c.c_uint32), ("pic_x", c.c_uint32), ("pic_y", c.c_uint32),
                    ("fps_numerator", c.c_uint32), ("fps_denominator", c.c_uint32),
                    ("aspect_numerator", c.c_uint32), ("aspect_denominator", c.c_uint32),
                    ("colorspace", c.c_int), ("pixel_fmt", c.c_int), ("target_bitrate", c.c_int),
                    ("quality", c.c_int), ("keyframe_granule_shift", c.c_int)]

    class Comment(c.Structure):
        _fields_ = [("user_comments", c.c_void_p), ("comment_lengths", c.c_void_p), ("comments", c.c_int),
                    ("vendor", c.c_char_p)]

    class Packet(c.Structure):
        _fields_ = [("packet", c.POINTER(c.c_ubyte)), ("bytes", c.c_long), ("b_o_s", c.c_long),
                    ("e_o_s", c.c_long), ("granulepos", c.c_int64), ("packetno", c.c_int64)]

    class Page(c.Structure):
        _fields_ = [("header", c.POINTER(c.c_ubyte)), ("header_len", c.c_long),
                    ("body", c.POINTER(c.c_ubyte)), ("body_len", c.c_long)]

    class Plane(c.Structure):
        _fields_ = [("width", c.c_int), ("height", c.c_int), ("stride", c.c_int), ("data", c.POINTER(c.c_ubyte))]

    return Info, Comment, Packet, Page, Plane


def _libtheora_packets(images, width, height, time_base: Fraction, gop: int, bitrate: int, quality: int | None):
    """(headers, [(payload, key, granulepos)]) from libtheora, set up as FFmpeg's libtheoraenc.c does."""
    import ctypes as c

    _, dec, enc_lib = _theora_libs()
    Info, Comment, Packet, _, Plane = _theora_structs()
    enc_lib.th_encode_alloc.restype = c.c_void_p
    enc_lib.th_encode_alloc.argtypes = [c.POINTER(Info)]
    enc_lib.th_encode_ctl.argtypes = [c.c_void_p, c.c_int, c.c_void_p, c.c_size_t]
    enc_lib.th_encode_flushheader.argtypes = [c.c_void_p, c.POINTER(Comment), c.POINTER(Packet)]
    enc_lib.th_encode_ycbcr_in.argtypes = [c.c_void_p, c.POINTER(Plane)]
    enc_lib.th_encode_packetout.argtypes = [c.c_void_p, c.c_int, c.POINTER(Packet)]
    enc_lib.th_encode_free.argtypes = [c.c_void_p]
    info = Info()
    dec.th_info_init(c.byref(info))
    fw, fh = (width + 15) // 16 * 16, (height + 15) // 16 * 16
    info.frame_width, info.frame_height, info.pic_width, info.pic_height = fw, fh, width, height
    info.fps_numerator, info.fps_denominator = time_base.denominator, time_base.numerator
    info.aspect_numerator = info.aspect_denominator = 1
    info.pixel_fmt = 0  # TH_PF_420
    info.target_bitrate, info.quality = (0, quality) if quality is not None else (bitrate, 0)
    info.keyframe_granule_shift = max(0, (gop - 1).bit_length())  # av_ceil_log2(gop)
    mask = (1 << info.keyframe_granule_shift) - 1
    enc = enc_lib.th_encode_alloc(c.byref(info))
    if not enc:
        raise OSError("th_encode_alloc failed")
    try:
        force = c.c_uint32(gop)
        enc_lib.th_encode_ctl(enc, 4, c.byref(force), 4)  # TH_ENCCTL_SET_KEYFRAME_FREQUENCY_FORCE
        comment = Comment()
        dec.th_comment_init(c.byref(comment))
        op = Packet()
        headers = []
        while enc_lib.th_encode_flushheader(enc, c.byref(comment), c.byref(op)) > 0:
            headers.append(c.string_at(op.packet, op.bytes))
        packets = []
        for image in images:
            yuv = av.VideoFrame.from_ndarray(image, format="bgr24").reformat(format="yuv420p").to_ndarray()
            planes, keep = (Plane * 3)(), []
            y = yuv[:height]
            u = yuv[height:height + height // 4].reshape(height // 2, width // 2)
            v = yuv[height + height // 4:].reshape(height // 2, width // 2)
            for k, (src, w, h) in enumerate(((y, fw, fh), (u, fw // 2, fh // 2), (v, fw // 2, fh // 2))):
                buf = np.zeros((h, w), np.uint8)
                buf[:src.shape[0], :src.shape[1]] = src
                keep.append(buf)
                planes[k].width, planes[k].height, planes[k].stride = w, h, w
                planes[k].data = buf.ctypes.data_as(c.POINTER(c.c_ubyte))
            if enc_lib.th_encode_ycbcr_in(enc, planes):
                raise OSError("th_encode_ycbcr_in failed")
            while enc_lib.th_encode_packetout(enc, 0, c.byref(op)) > 0:
                packets.append((c.string_at(op.packet, op.bytes), not (op.granulepos & mask), op.granulepos))
        return headers, packets
    finally:
        enc_lib.th_encode_free(enc)


def _raw_theora_ogg(path: Path, headers: list[bytes], first: tuple) -> None:
    """A one-frame Ogg Theora file written by libogg: only a template stream for FFmpeg's muxer."""
    import ctypes as c

    ogg = _theora_libs()[0]
    _, _, Packet, Page, _ = _theora_structs()
    state = c.create_string_buffer(4096)  # > sizeof(ogg_stream_state)
    ogg.ogg_stream_init(state, 1)
    page = Page()
    with open(path, "wb") as out:
        for number, (data, granule) in enumerate([(h, 0) for h in headers] + [(first[0], first[2])]):
            buf = c.create_string_buffer(data, len(data))
            op = Packet(c.cast(buf, c.POINTER(c.c_ubyte)), len(data), int(number == 0), int(number == len(headers)),
                        granule, number)
            ogg.ogg_stream_packetin(state, c.byref(op))
            if number == 0:
                while ogg.ogg_stream_flush(state, c.byref(page)):
                    out.write(c.string_at(page.header, page.header_len) + c.string_at(page.body, page.body_len))
        while ogg.ogg_stream_flush(state, c.byref(page)):
            out.write(c.string_at(page.header, page.header_len) + c.string_at(page.body, page.body_len))
    ogg.ogg_stream_clear(state)


def theora_ogg_clip(path: str | Path, *, frames: int = 24, width: int = 64, height: int = 48,
                    time_base: Fraction = Fraction(1, 12800), fps: Fraction = Fraction(25), gop: int = 12,
                    bitrate: int = 200_000, quality: int | None = None, audio: str | None = None,
                    audio_rate: int = 48000, container_format: str = "ogg") -> Path:
    """Theora (in Ogg unless told otherwise) as FFmpeg writes it (see above), with FFmpeg's defaults
    unless told otherwise; `quality` (0..63, libtheora's scale) instead of a bitrate. `audio`: a tone
    track with that encoder ("vorbis", FFmpeg's own, is allowed although experimental)."""
    path = Path(path)
    step = Fraction(1) / (fps * time_base)
    pts = [round(i * step) for i in range(frames)]
    images = [pattern(i, width, height) for i in range(frames)]
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(av.open(str(path), "w", format=container_format))
        if theora_encoder() == "pyav":
            stream = out.add_stream("libtheora", rate=fps)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.codec_context.time_base = time_base
            # libtheoraenc.c: with the qscale flag, Theora quality = global_quality / FF_QP2LAMBDA * 6.3
            stream.options = {"g": str(gop), **({"b": str(bitrate)} if quality is None else
                              {"flags": "+qscale", "global_quality": str(round(quality / 6.3 * 118))})}
        else:
            headers, packets = _libtheora_packets(images, width, height, time_base, gop, bitrate, quality)
            template = path.with_name(path.name + ".headers.ogg")
            stack.callback(template.unlink, missing_ok=True)
            _raw_theora_ogg(template, headers, packets[0])
            source = stack.enter_context(av.open(str(template)))
            stream = out.add_stream_from_template(source.streams.video[0], opaque=True)
        stream.time_base = time_base
        astream = None
        if audio:
            astream = out.add_stream(audio, rate=audio_rate)
            astream.layout = "stereo"
            if audio == "vorbis":
                astream.codec_context.options = {"strict": "experimental"}
        if theora_encoder() == "pyav":
            for image, p in zip(images, pts, strict=True):
                frame = av.VideoFrame.from_ndarray(image, format="bgr24").reformat(format="yuv420p")
                frame.pts, frame.time_base = p, time_base
                for packet in stream.encode(frame):
                    out.mux(packet)
            for packet in stream.encode():
                out.mux(packet)
        else:
            for (data, key, _), p in zip(packets, pts, strict=True):
                packet = av.Packet(data)
                packet.stream = stream
                packet.pts = packet.dts = p
                packet.duration = round(step)
                packet.time_base = time_base
                packet.is_keyframe = key
                out.mux(packet)
        if astream is not None:
            _write_tone(out, astream, float(pts[-1] * time_base + 1 / fps))
    return path


# ---------------------------------------------------------------- the container x codec matrix

# name -> (FFmpeg muxer, file extension, audio encoder that container takes)
MATRIX_CONTAINERS = {
    "mp4": ("mp4", ".mp4", "aac"),
    "mov": ("mov", ".mov", "aac"),
    "mkv": ("matroska", ".mkv", "aac"),
    "webm": ("webm", ".webm", "libopus"),
    "ogg": ("ogg", ".ogg", "libopus"),
    "avi": ("avi", ".avi", "libmp3lame"),
    "ts": ("mpegts", ".ts", "aac"),
}
# name -> encoders to try, first available wins
MATRIX_CODECS = {
    "h264": ("libx264",),
    "hevc": ("libx265",),
    "vp8": ("libvpx",),
    "vp9": ("libvpx-vp9",),
    "av1": ("libaom-av1", "libsvtav1", "librav1e"),
    "theora": ("libtheora",),
    "mpeg4": ("mpeg4",),
    "mjpeg": ("mjpeg",),
}
_FAST = {
    "libvpx": {"deadline": "realtime", "cpu-used": "8"},
    "libvpx-vp9": {"deadline": "realtime", "cpu-used": "8"},
    "libaom-av1": {"cpu-used": "8", "usage": "realtime"},
    "libsvtav1": {"preset": "12"},
    "librav1e": {"speed": "10"},
}


class NotEncodable(Exception):
    """This PyAV/FFmpeg build cannot write the combination (no encoder, or the muxer refuses it)."""


def pick_encoder(codec: str) -> str | None:
    for name in MATRIX_CODECS[codec]:
        if name == "libtheora" and theora_encoder():
            return name
        try:
            av.codec.Codec(name, "w")
            return name
        except Exception:  # noqa: BLE001 - not in this build
            continue
    return None


def matrix_clip(folder: str | Path, container: str, codec: str, audio: bool, *, frames: int = 24,
                width: int = 96, height: int = 64, gop: int = 8) -> Path:
    """A tiny clip of `codec` in `container` (see MATRIX_*), with a tone track when `audio`.
    NotEncodable (with the reason) when this build cannot write it."""
    muxer, suffix, audio_codec = MATRIX_CONTAINERS[container]
    encoder = pick_encoder(codec)
    if encoder is None:
        raise NotEncodable(f"no {codec} encoder in this build (tried {', '.join(MATRIX_CODECS[codec])})")
    path = Path(folder) / f"{codec}-{container}{'-audio' if audio else ''}{suffix}"
    # AVI has a frame-slot clock: a 1/12800 time base would be 511 empty slots per frame
    time_base = Fraction(1, 25) if muxer == "avi" else Fraction(1, 12800)
    kwargs = dict(frames=frames, width=width, height=height, gop=gop, time_base=time_base,
                  audio=audio_codec if audio else None, container_format=muxer)
    try:
        if encoder == "libtheora":
            # a quality target: at FFmpeg's default 200 kb/s, libtheora drops most frames of a 12800 fps
            # clock (tested on its own in test_media_containers)
            return theora_ogg_clip(path, quality=40, **kwargs)
        pix_fmt = "yuvj420p" if encoder == "mjpeg" else "yuv420p"
        bframes = 2 if encoder in ("libx264", "libx265", "mpeg4") else 0
        return make_clip(path, codec=encoder, pix_fmt=pix_fmt, bframes=bframes, options=_FAST.get(encoder), **kwargs)
    except (av.error.FFmpegError, ValueError) as exc:
        path.unlink(missing_ok=True)
        raise NotEncodable(f"{muxer} cannot take {encoder} here: {exc}") from exc
