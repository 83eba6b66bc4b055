"""The project's one pixel conversion between decoded video frames and BGR uint8 arrays.

swscale's default same-size conversion takes a fast, approximate path (chroma from one pixel of four,
low-precision rounding) that alone costs ~41 dB on a BGR -> yuv420p -> BGR round trip of real footage.
Accurate rounding + full chroma interpolation both ways brings that to ~50 dB, and BITEXACT makes
the bytes independent of the CPU's SIMD, so every worker in a cluster decodes the same pixels.

Bit depth: the pipeline is 8-bit. Every source, 10- and 12-bit included, is converted here to BGR
uint8 (swscale rounds each sample to 8 bits) because every stage after decode (detection, alignment,
swapping, masks, paste-back, enhancement) works on uint8 images, as FaceFusion does; segments are
then encoded as 8-bit yuv420p whatever the encoder. Writing 10-bit output from 8-bit frames would
only pad zeros. A real 10-bit path would carry uint16 (or float) frames from here through the face
stages and paste-back, encode them as yuv420p10le with libx265 / libvpx-vp9 profile 2, and keep the
source's transfer and primaries tags (HDR). `bit_depth_note` says when a source loses bits.
"""

from __future__ import annotations

import av
import numpy as np
from av.video.reformatter import ColorRange, Colorspace, Interpolation

PIPELINE_BIT_DEPTH = 8  # bits per sample of the frames every stage sees and every output is written with

SWS_FLAGS = (Interpolation.BICUBIC | Interpolation.ACCURATE_RND | Interpolation.FULL_CHR_H_INT
             | Interpolation.FULL_CHR_H_INP | Interpolation.BITEXACT)


def frame_to_bgr(frame: av.VideoFrame) -> np.ndarray:
    """BGR uint8 HxWx3 of a decoded frame, using the frame's own colour matrix and range tags
    (FFmpeg's BT.601 default when untagged, as FaceFusion's ffmpeg pipe does). Sources with more
    than 8 bits per sample are rounded to 8 here, on purpose (see the module doc)."""
    return frame.reformat(format="bgr24", interpolation=SWS_FLAGS).to_ndarray()


# Luma pixels of context converted around a region: swscale's bicubic chroma filter reads a few chroma
# samples beyond each output pixel; 16 is well past that reach (tests/test_media_regions.py).
REGION_MARGIN = 16


def converts_by_region(frame: av.VideoFrame) -> bool:
    """Whether `regions_to_bgr` converts only the regions of this frame (8-bit 4:2:0, even size)."""
    return frame.format.name in ("yuv420p", "yuvj420p") and frame.width % 2 == 0 and frame.height % 2 == 0


def regions_to_bgr(frame: av.VideoFrame, boxes: list[tuple[int, int, int, int]]) -> list[np.ndarray]:
    """`frame_to_bgr(frame)[y1:y2, x1:x2]` of each box (x1, y1, x2, y2), bit for bit, converting only
    the boxes and a margin around them: a stage that needs BGR only inside face patches skips the
    whole-frame conversion (~20 ms a 1080p frame). The sub-frames are made from the decoded frame so
    that they carry its tags, chroma siting included (a frame made from an array is sited otherwise and
    converts differently); other pixel formats convert whole."""
    if not boxes:
        return []
    if not converts_by_region(frame):
        whole = frame_to_bgr(frame)
        return [whole[y1:y2, x1:x2] for x1, y1, x2, y2 in boxes]
    width, height = frame.width, frame.height
    carrier = frame.reformat(width=16, height=16, interpolation=Interpolation.POINT)  # the tags, no pixels
    planes = [np.frombuffer(p, np.uint8).reshape(-1, p.line_size) for p in frame.planes]
    out = []
    for x1, y1, x2, y2 in boxes:
        ex1, ey1 = max(0, x1 - REGION_MARGIN) & ~1, max(0, y1 - REGION_MARGIN) & ~1
        ex2, ey2 = min(width, (x2 + REGION_MARGIN + 1) & ~1), min(height, (y2 + REGION_MARGIN + 1) & ~1)
        sub = carrier.reformat(width=ex2 - ex1, height=ey2 - ey1, interpolation=Interpolation.POINT)
        for k, (src, dst) in enumerate(zip(planes, sub.planes, strict=True)):
            s = 0 if k == 0 else 1  # chroma planes are half size both ways
            rows = src[ey1 >> s:ey2 >> s, ex1 >> s:ex2 >> s]
            np.frombuffer(dst, np.uint8).reshape(-1, dst.line_size)[:rows.shape[0], :rows.shape[1]] = rows
        sub.colorspace, sub.color_range = frame.colorspace, frame.color_range
        out.append(frame_to_bgr(sub)[y1 - ey1:y2 - ey1, x1 - ex1:x2 - ex1])
    return out


def bgr_to_frame(image: np.ndarray, pix_fmt: str = "yuv420p") -> av.VideoFrame:
    """An encoder-ready frame: BT.709 matrix, TV range (FaceFusion's output colour settings)."""
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="bgr24")
    return frame.reformat(format=pix_fmt, dst_colorspace=Colorspace.ITU709, dst_color_range=ColorRange.MPEG,
                          interpolation=SWS_FLAGS)


def bit_depth_note(info) -> str | None:
    """The line the log and the run report carry for a source with more bits than the pipeline
    keeps (a VideoInfo with bit_depth 10 or 12); None for an 8-bit source."""
    if info.bit_depth > PIPELINE_BIT_DEPTH:
        return f"{info.bit_depth}-bit source is processed and written as {PIPELINE_BIT_DEPTH}-bit"
    return None


def yuv420_planes(flat: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Y (h, w), U and V (h/2, w/2) views of a yuv420p frame's bytes laid out as `to_ndarray` gives them
    (even sizes)."""
    area = width * height
    y = flat[:area].reshape(height, width)
    u = flat[area:area + area // 4].reshape(height // 2, width // 2)
    v = flat[area + area // 4:area + area // 2].reshape(height // 2, width // 2)
    return y, u, v


def paste_bgr_into_yuv420(flat: np.ndarray, width: int, height: int, box: tuple[int, int, int, int],
                          bgr: np.ndarray, changed: np.ndarray, colorspace: int, color_range: int) -> None:
    """Write the `changed` pixels of a BGR region (at `box` x1, y1, x2, y2) into a yuv420p frame's bytes,
    in place, converted with the frame's own matrix and range (the ones frame_to_bgr read it with).
    Every other luma sample, and the chroma of every 2x2 block without a changed pixel, keeps the
    decoded bytes: outside the faces the output is the source's pixels, not a colour round trip."""
    x1, y1, x2, y2 = box
    ex1, ey1, ex2, ey2 = x1 - x1 % 2, y1 - y1 % 2, x2 + x2 % 2, y2 + y2 % 2  # whole chroma blocks
    pad = ((y1 - ey1, ey2 - y2), (x1 - ex1, ex2 - x2))
    region = np.pad(bgr, (*pad, (0, 0)), mode="edge")
    mask = np.pad(changed, pad, constant_values=False)
    converted = av.VideoFrame.from_ndarray(np.ascontiguousarray(region), format="bgr24").reformat(
        format="yuv420p", dst_colorspace=colorspace, dst_color_range=color_range, interpolation=SWS_FLAGS)
    ry, ru, rv = yuv420_planes(converted.to_ndarray().reshape(-1), ex2 - ex1, ey2 - ey1)
    y, u, v = yuv420_planes(flat, width, height)
    y[ey1:ey2, ex1:ex2][mask] = ry[mask]
    blocks = mask[0::2, 0::2] | mask[0::2, 1::2] | mask[1::2, 0::2] | mask[1::2, 1::2]  # any changed pixel
    u[ey1 // 2:ey2 // 2, ex1 // 2:ex2 // 2][blocks] = ru[blocks]
    v[ey1 // 2:ey2 // 2, ex1 // 2:ex2 // 2][blocks] = rv[blocks]
