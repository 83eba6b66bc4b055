"""One frame of a job's target, exactly as the job sees it, without Ray: which frame a --frame/--time
names, its pixels (decoded through the job's own chunk plan, turned upright) and the reference face of
reference mode. `ffray preview` and `ffray faces` use it; so does the driver for the reference face.
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from ffray.errors import InputError, MediaError
from ffray.faces.options import FaceOptions
from ffray.faces.types import Face
from ffray.pipeline.stages import to_display


def is_image(uri: str | os.PathLike) -> bool:
    """A still image (read with read_image) rather than a video, by its extension."""
    from ffray.faces.image import IMAGE_FORMATS
    from ffray.media.io import split_uri

    return Path(split_uri(uri)[1]).suffix.lower() in IMAGE_FORMATS


def frame_at_time(info, seconds: Fraction | float, target: str = "") -> int:
    """The frame shown at `seconds` from the video's first frame: the last one that starts at or before."""
    pts = info.frame_pts
    seconds = Fraction(seconds)
    if not pts or seconds < 0 or seconds >= Fraction(info.duration):
        raise InputError(f"--time {float(seconds):g}: {target or info.uri} is {info.duration:.3f} s long "
                         f"(frames 0-{info.frames - 1})")
    at = pts[0] + seconds / Fraction(info.time_base)  # in pts units, exact
    return max(0, bisect.bisect_right(pts, at) - 1)


def check_frame_number(info, number: int, target: str, flag: str = "--frame") -> None:
    if not 0 <= number < info.frames:
        raise InputError(f"{flag} {number}: {target} has frames 0-{info.frames - 1}")


def decode_frame(target: str, info, number: int, chunk_frames: int, what: str = "frame") -> np.ndarray:
    """Frame `number` (presentation order) upright, decoded from the chunk of the job's plan that holds
    it: the bytes the job's stages analyse and swap."""
    from ffray.media import decode_chunk, plan_chunks

    chunk = next(c for c in plan_chunks(info, chunk_frames) if c.start <= number < c.end)
    for frame in decode_chunk(target, chunk):
        if frame.index == number:
            return to_display(frame.image, info.rotation)
    raise MediaError(target, f"cannot decode {what} {number}")


def reference_face(analyser, options: FaceOptions, target: str, info, chunk_frames: int,
                   source_faces: Sequence[Face] = ()) -> Face | None:
    """Reference mode on a video: the face to follow, from --reference-face-image or the target's
    reference frame, --reference-face-position after sort/filter (source faces resolve 'auto' filters).
    None when that image or frame has no face."""
    from ffray.faces.select import choose_reference_face

    if options.reference_face_image:
        from ffray.faces.image import read_image

        image = read_image(options.reference_face_image)
    else:
        number = options.reference_frame_number
        check_frame_number(info, number, target, "--reference-frame-number")
        image = decode_frame(target, info, number, chunk_frames, what="reference frame")
    faces = analyser.analyse([image], embed=True)[0]
    return choose_reference_face(faces, options, source_faces)


@dataclass
class TargetFrame:
    target: str
    image: np.ndarray  # BGR uint8, upright
    number: int  # frame number in the video (0 for an image)
    seconds: float | None  # from the video's first frame; None for an image
    info: Any = None  # VideoInfo; None for an image


def read_target_frame(target: str, frame: int | None, seconds: Fraction | None, chunk_frames: int) -> TargetFrame:
    """Frame `frame` (default 0) of a video target, or the one shown at `seconds`; an image is its own
    (only) frame 0. Missing or unreadable files, and frame numbers out of range, are InputErrors."""
    from ffray.faces.image import read_image

    if is_image(target):
        if frame:
            raise InputError(f"--frame {frame}: {target} is an image (its only frame is 0)")
        if seconds:
            raise InputError(f"--time {float(seconds):g}: {target} is an image")
        return TargetFrame(target, read_image(target), 0, None, None)
    from ffray.media import probe

    info = probe(target)
    if info.frames == 0:
        raise MediaError(target, "no decodable video frames")
    number = frame_at_time(info, seconds, target) if seconds is not None else (frame or 0)
    check_frame_number(info, number, target)
    image = decode_frame(target, info, number, chunk_frames)
    return TargetFrame(target, image, number, float((info.frame_pts[number] - info.frame_pts[0]) * info.time_base),
                       info)


def frame_reference(job, frame: TargetFrame, chunk_frames: int, target_faces: Sequence[Face],
                    source_faces: Sequence[Face]) -> Face | None:
    """Reference mode: the reference face a job would use for this target (`job`: a
    ffray.faces.frame.FrameSwap). A video's is the driver's (`reference_face`); an image's is
    `ffray swap-image`'s. None outside reference mode."""
    options = job.options
    if options.face_selector_mode != "reference":
        return None
    if frame.info is None:
        from ffray.faces.image import read_image

        reference_image = read_image(options.reference_face_image) if options.reference_face_image else None
        return job.image_reference(target_faces, source_faces, reference_image)
    return reference_face(job.analyser, options, frame.target, frame.info, chunk_frames, source_faces)
