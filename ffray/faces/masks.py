"""Crop masks as FaceFusion's `face_masker`: box, occlusion (XSeg), area (68-point hull), region
(BiSeNet); all float32 in [0, 1] at crop resolution, combined by element-wise minimum.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np


def box_mask_numbers(crop_width: int, blur: float) -> tuple[int, int, float]:
    """(blur_amount, blur_area, sigma) for a crop width: 128 px at blur 0.3 -> (19, 9, 4.75)."""
    blur_amount = int(crop_width * 0.5 * blur)
    blur_area = max(blur_amount // 2, 1)
    return blur_amount, blur_area, blur_amount * 0.25


def create_box_mask(crop_size: tuple[int, int], blur: float,
                    padding: Sequence[int] = (0, 0, 0, 0)) -> np.ndarray:
    """Box mask for a crop of (width, height); `padding` in percent (top, right, bottom, left)."""
    width, height = int(crop_size[0]), int(crop_size[1])
    blur_amount, blur_area, sigma = box_mask_numbers(width, blur)
    mask = np.ones((height, width), dtype=np.float32)
    mask[:max(blur_area, int(height * padding[0] / 100)), :] = 0
    mask[-max(blur_area, int(height * padding[2] / 100)):, :] = 0
    mask[:, :max(blur_area, int(width * padding[3] / 100))] = 0
    mask[:, -max(blur_area, int(width * padding[1] / 100)):] = 0
    if blur_amount > 0:
        mask = cv2.GaussianBlur(mask, (0, 0), sigma)
    return mask


def soften_mask(mask: np.ndarray) -> np.ndarray:
    """The occlusion/area/region post-process: sigma-5 blur, keep the upper half, stretch to 0..1."""
    return (cv2.GaussianBlur(mask.clip(0, 1), (0, 0), 5).clip(0.5, 1) - 0.5) * 2


def combine_masks(masks: Sequence[np.ndarray]) -> np.ndarray:
    return np.minimum.reduce(list(masks)).clip(0, 1)
