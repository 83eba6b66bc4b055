"""68-point landmarkers exactly as FaceFusion's `face_landmarker`: 2dfan4, peppa_wutz, and fan_68_5
(5 -> 68 regression). Every model takes a batch of faces and runs one ONNX call per chunk where the
batch dimension is dynamic.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from ffray.faces.align import (
    estimate_matrix,
    rotation_matrix_and_size,
    transform_points,
    warp_face_by_translation,
)
from ffray.faces.detect import run_batched

LANDMARKER_TYPES = ("2dfan4", "peppa_wutz")
LANDMARKER_SIZE = 256


def optimize_contrast(crop: np.ndarray) -> np.ndarray:
    """FaceFusion's `conditional_optimize_contrast`: a uint8 RGB->Lab->RGB round trip (applied to BGR data,
    so lossy even when CLAHE is skipped), with CLAHE on L when the crop is dark (mean L < 30)."""
    lab = cv2.cvtColor(crop, cv2.COLOR_RGB2Lab)
    if np.mean(lab[:, :, 0]) < 30:
        lab[:, :, 0] = cv2.createCLAHE(clipLimit=2).apply(lab[:, :, 0])
    return cv2.cvtColor(lab, cv2.COLOR_Lab2RGB)


def prepare_landmark_crop(frame: np.ndarray, box: np.ndarray, angle: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(3x256x256 float32 input, crop matrix, rotation matrix) for one face box."""
    size = (LANDMARKER_SIZE, LANDMARKER_SIZE)
    box = np.asarray(box, dtype=np.float64)
    scale = 195 / np.subtract(box[2:], box[:2]).max().clip(1, None)
    translation = (size[0] - np.add(box[2:], box[:2]) * scale) * 0.5
    rotation, rotated_size = rotation_matrix_and_size(angle, size)
    crop, matrix = warp_face_by_translation(frame, translation, scale, size)
    crop = cv2.warpAffine(crop, rotation, rotated_size)
    crop = optimize_contrast(crop)
    return crop.transpose(2, 0, 1).astype(np.float32) / 255.0, matrix, rotation


class Landmarker68:
    """2dfan4 or peppa_wutz on a batch of (frame, box, angle)."""

    def __init__(self, session, landmarker_type: str = "2dfan4", batch_size: int = 16):
        if landmarker_type not in LANDMARKER_TYPES:
            raise ValueError(f"unknown landmarker {landmarker_type!r}; choose from {', '.join(LANDMARKER_TYPES)}")
        self.session = session
        self.type = landmarker_type
        self.batch_size = max(1, int(batch_size))
        self.input_name = session.get_inputs()[0].name

    def landmarks(self, frames: Sequence[np.ndarray], boxes: Sequence[np.ndarray],
                  angles: Sequence[int]) -> list[tuple[np.ndarray, float]]:
        """(68x2 landmarks in frame coordinates, score in 0..1) per face; `frames[i]` holds face i."""
        prepared = [prepare_landmark_crop(f, b, a) for f, b, a in zip(frames, boxes, angles, strict=True)]
        feeds = [{self.input_name: p[0][None]} for p in prepared]
        results = []
        for outputs, (_, matrix, rotation) in zip(run_batched(self.session, feeds, self.batch_size), prepared,
                                                  strict=True):
            if self.type == "2dfan4":
                points = outputs[0][:, :, :2][0] / 64 * 256
                score = np.mean(np.amax(outputs[1], axis=(2, 3)))
                score = np.interp(score, [0, 0.9], [0, 1])
            else:
                prediction = outputs[0].reshape(-1, 3)
                points = prediction[:, :2] / 64 * LANDMARKER_SIZE
                score = np.interp(prediction[:, 2].mean(), [0, 0.95], [0, 1])
            points = transform_points(points, cv2.invertAffineTransform(rotation))
            points = transform_points(points, cv2.invertAffineTransform(matrix))
            results.append((points, float(score)))
        return results


def prepare_68_5_input(landmark_5: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(1x5x2 float32 input, matrix): the 5 points mapped by their similarity to `ffhq_512` at crop
    size (1, 1), i.e. into unit template coordinates (FaceFusion's `estimate_face_landmark_68_5`)."""
    matrix = estimate_matrix(landmark_5, "ffhq_512", (1, 1))
    points = cv2.transform(np.asarray(landmark_5).reshape(1, -1, 2), matrix).reshape(1, -1, 2)
    return points.astype(np.float32), matrix


class Landmarker68From5:
    """fan_68_5: 68 points regressed from 5, normalised through the ffhq_512 template at unit size."""

    def __init__(self, session, batch_size: int = 64):
        self.session = session
        self.batch_size = max(1, int(batch_size))
        self.input_name = session.get_inputs()[0].name

    def landmarks(self, landmarks_5: Sequence[np.ndarray]) -> list[np.ndarray]:
        prepared = [prepare_68_5_input(l5) for l5 in landmarks_5]
        feeds = [{self.input_name: p[0]} for p in prepared]
        matrices = [p[1] for p in prepared]
        out = []
        for outputs, matrix in zip(run_batched(self.session, feeds, self.batch_size), matrices, strict=True):
            points = outputs[0][0]
            out.append(cv2.transform(points.reshape(1, -1, 2), cv2.invertAffineTransform(matrix)).reshape(-1, 2))
        return out
