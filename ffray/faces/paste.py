"""Paste-back exactly as FaceFusion (`face_helper.paste_back`, 3.3+): only the region the crop covers
is warped back; the blend runs in float and is truncated (not rounded) to uint8.
"""

from __future__ import annotations

import cv2
import numpy as np

from ffray.faces.align import estimate_matrix, transform_points


def paste_area(frame_shape: tuple[int, ...], crop_shape: tuple[int, ...],
               matrix: np.ndarray) -> tuple[tuple[int, int, int, int], np.ndarray]:
    """Frame box (x1, y1, x2, y2) the crop maps onto, and the crop->box matrix."""
    frame_h, frame_w = frame_shape[:2]
    crop_h, crop_w = crop_shape[:2]
    inverse = cv2.invertAffineTransform(matrix)
    corners = np.array([[0, 0], [crop_w, 0], [crop_w, crop_h], [0, crop_h]])
    points = transform_points(corners, inverse)
    lo = np.floor(points.min(axis=0)).astype(int)
    hi = np.ceil(points.max(axis=0)).astype(int)
    x1, y1 = np.clip(lo, 0, [frame_w, frame_h])
    x2, y2 = np.clip(hi, 0, [frame_w, frame_h])
    paste_matrix = inverse.copy()
    paste_matrix[0, 2] -= x1
    paste_matrix[1, 2] -= y1
    return (int(x1), int(y1), int(x2), int(y2)), paste_matrix


def paste_back(frame: np.ndarray, crop: np.ndarray, mask: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """New frame with `crop` (any float or uint8 dtype, BGR) blended in through `mask` (crop-sized, 0..1).

    `matrix` is the frame->crop matrix the crop was warped with. The input frame is not modified.
    Pixels where the warped mask is 0 are bit-identical to the input.
    """
    out = frame.copy()
    paste_into(out, crop, mask, matrix)
    return out


def paste_into(frame: np.ndarray, crop: np.ndarray, mask: np.ndarray,
               matrix: np.ndarray) -> tuple[int, int, int, int] | None:
    """`paste_back` in place: only the paste area of `frame` is read and written (no whole-frame copy
    per face). Returns that area (x1, y1, x2, y2), or None when the crop lies outside the frame."""
    (x1, y1, x2, y2), paste_matrix = paste_area(frame.shape, crop.shape, matrix)
    width, height = x2 - x1, y2 - y1
    if width <= 0 or height <= 0:
        return None
    inverse_mask = cv2.warpAffine(mask, paste_matrix, (width, height)).clip(0, 1)
    inverse_mask = np.expand_dims(inverse_mask, axis=-1)
    inverse_crop = cv2.warpAffine(crop, paste_matrix, (width, height), borderMode=cv2.BORDER_REPLICATE)
    region = frame[y1:y2, x1:x2]
    blended = region * (1 - inverse_mask) + inverse_crop * inverse_mask
    frame[y1:y2, x1:x2] = blended.astype(frame.dtype)
    return int(x1), int(y1), int(x2), int(y2)


def crop_footprint(frame_shape: tuple[int, ...], crop_size: tuple[int, int], matrix: np.ndarray,
                   margin: int = 2) -> tuple[int, int, int, int]:
    """Frame box (x1, y1, x2, y2) holding every pixel that warping a `crop_size` (w, h) crop with
    `matrix` reads (bilinear: the pixel after each mapped point too) and that pasting it back writes,
    clipped to the frame. `margin` covers warpAffine's fixed-point rounding of the mapped points."""
    (x1, y1, x2, y2), _ = paste_area((1 << 30, 1 << 30), (crop_size[1], crop_size[0]), matrix)
    height, width = frame_shape[:2]
    return (max(0, x1 - margin), max(0, y1 - margin), min(width, x2 + margin), min(height, y2 + margin))


def blend_frames(original: np.ndarray, processed: np.ndarray, factor: float) -> np.ndarray:
    """FaceFusion's `blend_frame`: `addWeighted(original, 1 - factor, processed, factor, 0)`."""
    return cv2.addWeighted(original, 1 - factor, processed, factor, 0)


def warps_footprint(frame_shape: tuple[int, ...], landmark_5: np.ndarray,
                    warps: list[tuple[str, int]]) -> tuple[int, int, int, int] | None:
    """Union of `crop_footprint` over the (template, crop size) warps a face component makes of one
    face: the only frame pixels it reads or writes for that face. None for degenerate landmarks
    (the components leave such a face alone)."""
    boxes = []
    for template, size in warps:
        try:
            matrix = estimate_matrix(landmark_5, template, (size, size))
        except ValueError:
            return None
        boxes.append(crop_footprint(frame_shape, (size, size), matrix))
    if not boxes:
        return None
    x1, y1 = min(b[0] for b in boxes), min(b[1] for b in boxes)
    x2, y2 = max(b[2] for b in boxes), max(b[3] for b in boxes)
    return (x1, y1, x2, y2) if x2 > x1 and y2 > y1 else None
