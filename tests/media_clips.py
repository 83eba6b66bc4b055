"""Tiny test videos made with PyAV, for tests that need a clip with a particular property.

Each generator writes a real encoded file and returns its path. Frames are deterministic (a seeded
pattern that moves), so two calls with the same arguments give the same pixels.
"""

from __future__ import annotations

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
