"""Paste-back exactly as FaceFusion (`face_helper.paste_back`, 3.3+): only the region the crop covers
is warped back; the blend runs in float and is truncated (not rounded) to uint8.
"""

from __future__ import annotations

import cv2
import numpy as np

from ffray.faces.align import transform_points


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
    (x1, y1, x2, y2), paste_matrix = paste_area(frame.shape, crop.shape, matrix)
    out = frame.copy()
    width, height = x2 - x1, y2 - y1
    if width <= 0 or height <= 0:  # crop lies entirely outside the frame
        return out
    inverse_mask = cv2.warpAffine(mask, paste_matrix, (width, height)).clip(0, 1)
    inverse_mask = np.expand_dims(inverse_mask, axis=-1)
    inverse_crop = cv2.warpAffine(crop, paste_matrix, (width, height), borderMode=cv2.BORDER_REPLICATE)
    region = out[y1:y2, x1:x2]
    blended = region * (1 - inverse_mask) + inverse_crop * inverse_mask
    out[y1:y2, x1:x2] = blended.astype(out.dtype)
    return out


def blend_frames(original: np.ndarray, processed: np.ndarray, factor: float) -> np.ndarray:
    """FaceFusion's `blend_frame`: `addWeighted(original, 1 - factor, processed, factor, 0)`."""
    return cv2.addWeighted(original, 1 - factor, processed, factor, 0)
