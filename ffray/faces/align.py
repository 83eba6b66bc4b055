"""Face alignment exactly as FaceFusion does it: warp templates, similarity matrix, warps, 5-from-68.

Templates are normalised (multiply by the crop size). Point order everywhere: left eye, right eye,
nose tip, left mouth corner, right mouth corner (image left/right).
"""

from __future__ import annotations

import cv2
import numpy as np

WARP_TEMPLATES: dict[str, np.ndarray] = {
    "arcface_112_v1": np.array([
        [0.35473214, 0.45658929], [0.64526786, 0.45658929], [0.50000000, 0.61154464],
        [0.37913393, 0.77687500], [0.62086607, 0.77687500],
    ]),
    "arcface_112_v2": np.array([
        [0.34191607, 0.46157411], [0.65653393, 0.45983393], [0.50022500, 0.64050536],
        [0.37097589, 0.82469196], [0.63151696, 0.82325089],
    ]),
    "arcface_128": np.array([
        [0.36167656, 0.40387734], [0.63696719, 0.40235469], [0.50019687, 0.56044219],
        [0.38710391, 0.72160547], [0.61507734, 0.72034453],
    ]),
    "dfl_whole_face": np.array([
        [0.35342266, 0.39285716], [0.62797622, 0.39285716], [0.48660713, 0.54017860],
        [0.38839287, 0.68750011], [0.59821427, 0.68750011],
    ]),
    "ffhq_512": np.array([
        [0.37691676, 0.46864664], [0.62285697, 0.46912813], [0.50123859, 0.61331904],
        [0.39308822, 0.72541100], [0.61150205, 0.72490465],
    ]),
    "mtcnn_512": np.array([
        [0.36562865, 0.46733799], [0.63305391, 0.46585885], [0.50019127, 0.61942959],
        [0.39032951, 0.77598822], [0.61178945, 0.77476328],
    ]),
    "styleganex_384": np.array([
        [0.42353745, 0.52289879], [0.57725008, 0.52319972], [0.50123859, 0.61331904],
        [0.43364461, 0.68337652], [0.57015325, 0.68306005],
    ]),
}
for _template in WARP_TEMPLATES.values():
    _template.flags.writeable = False

def _size(crop_size: int | tuple[int, int]) -> tuple[int, int]:
    """(width, height) from an int or a tuple."""
    if isinstance(crop_size, (int, np.integer)):
        return int(crop_size), int(crop_size)
    return int(crop_size[0]), int(crop_size[1])


def template_points(template: str, crop_size: int | tuple[int, int]) -> np.ndarray:
    try:
        base = WARP_TEMPLATES[template]
    except KeyError:
        raise ValueError(f"unknown warp template {template!r}; known: {', '.join(WARP_TEMPLATES)}") from None
    return base * np.array(_size(crop_size), dtype=np.float64)


def estimate_matrix(landmark_5: np.ndarray, template: str, crop_size: int | tuple[int, int]) -> np.ndarray:
    """Similarity transform frame -> crop (2x3 float64), FaceFusion's `estimate_matrix_by_face_landmark_5`.

    RANSAC with a 100 px threshold keeps all five points as inliers; OpenCV then refines with
    Levenberg-Marquardt, so this is not bit-identical to Umeyama (skimage), on purpose.
    """
    points = np.asarray(landmark_5, dtype=np.float64).reshape(5, 2)
    matrix = cv2.estimateAffinePartial2D(
        points, template_points(template, crop_size), method=cv2.RANSAC, ransacReprojThreshold=100
    )[0]
    if matrix is None:  # degenerate points (all equal): no similarity exists
        raise ValueError("cannot align face: degenerate landmarks")
    return matrix


def warp_face(frame: np.ndarray, landmark_5: np.ndarray, template: str,
              crop_size: int | tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Aligned crop and its frame->crop matrix (`warp_face_by_face_landmark_5`).

    INTER_AREA is what FaceFusion passes; warpAffine treats it as bilinear.
    """
    size = _size(crop_size)
    matrix = estimate_matrix(landmark_5, template, size)
    crop = cv2.warpAffine(frame, matrix, size, borderMode=cv2.BORDER_REPLICATE, flags=cv2.INTER_AREA)
    return crop, matrix


def warp_face_by_translation(frame: np.ndarray, translation: np.ndarray, scale: float,
                             crop_size: int | tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    matrix = np.array([[scale, 0, translation[0]], [0, scale, translation[1]]], dtype=np.float64)
    crop = cv2.warpAffine(frame, matrix, _size(crop_size))
    return crop, matrix


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    shape = np.asarray(points).shape
    out = cv2.transform(np.asarray(points).reshape(-1, 1, 2), matrix)
    return out.reshape(shape)


def transform_box(box: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    x1, y1, x2, y2 = box
    points = np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]], dtype=np.float64)
    points = transform_points(points, matrix)
    lo, hi = points.min(axis=0), points.max(axis=0)
    return np.array([lo[0], lo[1], hi[0], hi[1]])


def rotation_matrix_and_size(angle: float, size: tuple[int, int]) -> tuple[np.ndarray, tuple[int, int]]:
    """Rotation about the centre onto an expanded canvas (`create_rotation_matrix_and_size`)."""
    matrix = cv2.getRotationMatrix2D((size[0] / 2, size[1] / 2), angle, 1)
    rotated = np.dot(np.abs(matrix[:, :2]), size)
    matrix[:, -1] += (rotated - size) * 0.5
    return matrix, (int(rotated[0]), int(rotated[1]))


def landmark_5_from_68(landmark_68: np.ndarray) -> np.ndarray:
    """FaceFusion's `convert_to_face_landmark_5`: eye centres, nose tip (30), mouth corners (48, 54)."""
    return np.array([
        np.mean(landmark_68[36:42], axis=0),
        np.mean(landmark_68[42:48], axis=0),
        landmark_68[30],
        landmark_68[48],
        landmark_68[54],
    ])


def estimate_face_angle(landmark_68: np.ndarray) -> int:
    """Roll from jaw point 0 to 16, snapped to 0/90/180/270."""
    x1, y1 = landmark_68[0]
    x2, y2 = landmark_68[16]
    theta = np.degrees(np.arctan2(y2 - y1, x2 - x1)) % 360
    angles = np.linspace(0, 360, 5)
    return int(angles[np.argmin(np.abs(angles - theta))] % 360)
