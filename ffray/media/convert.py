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
