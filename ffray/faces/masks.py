"""Crop masks as FaceFusion's `face_masker`: box, occlusion (XSeg), area (68-point hull), region
(BiSeNet); all float32 in [0, 1] at crop resolution, combined by element-wise minimum.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np


def box_mask_numbers(crop_width: int, blur: float) -> tuple[int, int, float]:
    """(blur_amount, blur_area, sigma) for a crop width: 128 px at blur 0.3 -> (19, 9, 4.75)."""
    blur_amount = int(crop_width * 0.5 * blur)
    blur_area = max(blur_amount // 2, 1)
    return blur_amount, blur_area, blur_amount * 0.25


def create_box_mask(crop_size: tuple[int, int], blur: float,
                    padding: Sequence[int] = (0, 0, 0, 0)) -> np.ndarray:
    """Box mask for a crop of (width, height); `padding` in percent (top, right, bottom, left).
    Read-only and shared: it depends on these numbers alone, and its blur (sigma ~19 px for a 512 crop)
    cost more than the rest of an enhancer's CPU work per face when made every time."""
    return _box_mask(int(crop_size[0]), int(crop_size[1]), float(blur), tuple(int(p) for p in padding))


@functools.lru_cache(maxsize=64)
def _box_mask(width: int, height: int, blur: float, padding: tuple[int, ...]) -> np.ndarray:
    blur_amount, blur_area, sigma = box_mask_numbers(width, blur)
    mask = np.ones((height, width), dtype=np.float32)
    mask[:max(blur_area, int(height * padding[0] / 100)), :] = 0
    mask[-max(blur_area, int(height * padding[2] / 100)):, :] = 0
    mask[:, :max(blur_area, int(width * padding[3] / 100))] = 0
    mask[:, -max(blur_area, int(width * padding[1] / 100)):] = 0
    if blur_amount > 0:
        mask = cv2.GaussianBlur(mask, (0, 0), sigma)
    mask.flags.writeable = False
    return mask


def soften_mask(mask: np.ndarray) -> np.ndarray:
    """The occlusion/area/region post-process: sigma-5 blur, keep the upper half, stretch to 0..1."""
    return (cv2.GaussianBlur(mask.clip(0, 1), (0, 0), 5).clip(0.5, 1) - 0.5) * 2


def combine_masks(masks: Sequence[np.ndarray]) -> np.ndarray:
    return np.minimum.reduce(list(masks)).clip(0, 1)


# 68-point indices of FaceFusion's mask areas, and BiSeNet class ids of its regions
MASK_AREA_POINTS: dict[str, list[int]] = {
    "upper-face": [0, 1, 2, 31, 32, 33, 34, 35, 14, 15, 16, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17],
    "lower-face": [3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 35, 34, 33, 32, 31],
    "mouth": [48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 66, 67],
}
MASK_REGION_IDS: dict[str, int] = {
    "skin": 1, "left-eyebrow": 2, "right-eyebrow": 3, "left-eye": 4, "right-eye": 5, "glasses": 6,
    "nose": 10, "mouth": 11, "upper-lip": 12, "lower-lip": 13,
}
OCCLUDER_SIZE = 256
PARSER_SIZE = 512
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406]).astype(np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225]).astype(np.float32)


@dataclass(frozen=True)
class MaskOptions:
    types: tuple[str, ...] = ("box",)
    blur: float = 0.3
    padding: tuple[int, int, int, int] = (0, 0, 0, 0)
    areas: tuple[str, ...] = tuple(MASK_AREA_POINTS)
    regions: tuple[str, ...] = tuple(MASK_REGION_IDS)

    def __post_init__(self) -> None:
        unknown = [t for t in self.types if t not in ("box", "occlusion", "area", "region")]
        if unknown or not self.types:
            raise ValueError(f"face mask types must be among box, occlusion, area, region; got {self.types}")


def create_area_mask(crop_size: tuple[int, int], landmark_68: np.ndarray, areas: Sequence[str]) -> np.ndarray:
    """Convex hull of the selected areas' points (already in crop coordinates), softened."""
    points: list[int] = []
    for area in areas:
        points.extend(MASK_AREA_POINTS.get(area, []))
    hull = cv2.convexHull(np.asarray(landmark_68)[points].astype(np.int32))
    mask = np.zeros((int(crop_size[1]), int(crop_size[0])), dtype=np.float32)
    cv2.fillConvexPoly(mask, hull, 1.0)
    return soften_mask(mask)


class Occluder:
    """XSeg occlusion model: input NHWC **BGR** /255 at 256, output N x 256 x 256 x 1."""

    def __init__(self, session, batch_size: int = 16):
        self.session = session
        self.batch_size = max(1, int(batch_size))
        self.input_name = session.get_inputs()[0].name

    def masks(self, crops: Sequence[np.ndarray]) -> list[np.ndarray]:
        from ffray.faces.detect import run_batched

        feeds = [{self.input_name: np.expand_dims(cv2.resize(c, (OCCLUDER_SIZE, OCCLUDER_SIZE)), axis=0)
                  .astype(np.float32) / 255.0} for c in crops]
        out = []
        for outputs, crop in zip(run_batched(self.session, feeds, self.batch_size), crops, strict=True):
            mask = outputs[0][0].clip(0, 1).astype(np.float32)
            mask = cv2.resize(mask, crop.shape[:2][::-1])
            out.append(soften_mask(mask))
        return out


class FaceParser:
    """BiSeNet region model: input NCHW RGB ImageNet-normalised at 512, output N x 19 x 512 x 512."""

    def __init__(self, session, batch_size: int = 8):
        self.session = session
        self.batch_size = max(1, int(batch_size))
        self.input_name = session.get_inputs()[0].name

    def masks(self, crops: Sequence[np.ndarray], regions: Sequence[str]) -> list[np.ndarray]:
        from ffray.faces.detect import run_batched

        feeds = []
        for crop in crops:
            x = cv2.resize(crop, (PARSER_SIZE, PARSER_SIZE))
            x = x[:, :, ::-1].astype(np.float32) / 255.0
            x = np.divide(np.subtract(x, IMAGENET_MEAN), IMAGENET_STD)
            feeds.append({self.input_name: np.expand_dims(x, axis=0).transpose(0, 3, 1, 2)})
        ids = [MASK_REGION_IDS[r] for r in regions]
        out = []
        for outputs, crop in zip(run_batched(self.session, feeds, self.batch_size), crops, strict=True):
            region = np.isin(outputs[0][0].argmax(0), ids)
            region = cv2.resize(region.astype(np.float32), crop.shape[:2][::-1])
            out.append(soften_mask(region))
        return out


@dataclass
class MaskModels:
    occluder: Occluder | None = None
    parser: FaceParser | None = None


def crop_masks_before(crops: Sequence[np.ndarray], options: MaskOptions, models: MaskModels) -> list[list[np.ndarray]]:
    """Box and occlusion masks, computed on the crops before the model changes them."""
    out: list[list[np.ndarray]] = [[] for _ in crops]
    if "box" in options.types:
        for k, crop in enumerate(crops):
            out[k].append(create_box_mask(crop.shape[:2][::-1], options.blur, options.padding))
    if "occlusion" in options.types:
        if models.occluder is None:
            raise ValueError("the occlusion mask needs an occluder model (xseg)")
        for k, mask in enumerate(models.occluder.masks(crops)):
            out[k].append(mask)
    return out


def crop_masks_after(crops: Sequence[np.ndarray], landmarks_68: Sequence[np.ndarray | None],
                     before: Sequence[list[np.ndarray]], options: MaskOptions, models: MaskModels) -> list[np.ndarray]:
    """Add area and region masks (on the processed crops) and combine each face's masks by minimum."""
    masks = [list(m) for m in before]
    if "area" in options.types:
        for k, (crop, points) in enumerate(zip(crops, landmarks_68, strict=True)):
            if points is None:
                raise ValueError("the area mask needs 68-point landmarks on the faces")
            masks[k].append(create_area_mask(crop.shape[:2][::-1], points, options.areas))
    if "region" in options.types:
        if models.parser is None:
            raise ValueError("the region mask needs a face parser model (bisenet)")
        for k, mask in enumerate(models.parser.masks(crops, options.regions)):
            masks[k].append(mask)
    return [combine_masks(m) for m in masks]
