"""Alignment, paste-back, masks and selection: FaceFusion's numbers."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from ffray.faces.align import (
    WARP_TEMPLATES,
    estimate_face_angle,
    estimate_matrix,
    landmark_5_from_68,
    template_points,
    warp_face,
)
from ffray.faces.masks import box_mask_numbers, combine_masks, create_area_mask, create_box_mask
from ffray.faces.options import FaceOptions
from ffray.faces.paste import blend_frames, paste_back
from ffray.faces.select import (
    average_identity,
    choose_reference_face,
    face_distance,
    largest_face,
    select_faces,
    sort_faces,
)
from ffray.faces.types import Face

LANDMARKS = np.array([[100.3, 80.2], [141.7, 79.5], [121.1, 101.9], [104.6, 121.3], [137.2, 120.8]])


@pytest.mark.parametrize("template", sorted(WARP_TEMPLATES))
@pytest.mark.parametrize("size", [112, 128, 256, 512])
def test_aligning_a_templates_own_points_gives_the_identity(template, size):
    matrix = estimate_matrix(template_points(template, size), template, size)
    np.testing.assert_allclose(matrix, [[1, 0, 0], [0, 1, 0]], atol=1e-6)


def test_templates_match_insightface_arcface_destinations():
    arcface_dst = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655],
                            [70.7299, 92.2041]])
    np.testing.assert_allclose(template_points("arcface_112_v2", 112), arcface_dst, atol=1e-3)
    np.testing.assert_allclose(template_points("arcface_128", 128), arcface_dst + [8, 0], atol=1e-3)


def test_warp_maps_the_landmarks_onto_the_template():
    frame = np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8)
    crop, matrix = warp_face(frame, LANDMARKS, "arcface_128", 128)
    assert crop.shape == (128, 128, 3) and crop.dtype == np.uint8
    mapped = cv2.transform(LANDMARKS.reshape(-1, 1, 2), matrix).reshape(-1, 2)
    np.testing.assert_allclose(mapped, template_points("arcface_128", 128), atol=2.5)
    # a similarity: equal scale on both axes, no shear
    a, b = matrix[0, :2], matrix[1, :2]
    assert abs(np.linalg.norm(a) - np.linalg.norm(b)) < 1e-9 and abs(np.dot(a, b)) < 1e-9


def _umeyama(src, dst):
    """Least-squares similarity (skimage's SimilarityTransform / InsightFace's estimate_norm)."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    u, sigma, vt = np.linalg.svd(d.T @ s / len(src))
    rotation = u @ vt
    scale = sigma.sum() / (s ** 2).sum() * len(src)
    return np.hstack([scale * rotation, (mu_d - scale * rotation @ mu_s)[:, None]])


def test_alignment_is_opencv_ransac_with_lm_refinement_not_umeyama():
    noisy = LANDMARKS + np.random.default_rng(2).normal(0, 1.5, (5, 2))
    matrix = estimate_matrix(noisy, "arcface_128", 128)
    expected = cv2.estimateAffinePartial2D(noisy, template_points("arcface_128", 128), method=cv2.RANSAC,
                                           ransacReprojThreshold=100)[0]
    np.testing.assert_array_equal(matrix, expected)
    # the same least-squares similarity up to OpenCV's float32 refinement: close, but not bit-identical,
    # so a Umeyama implementation would move pixels at the crop's interpolation level
    umeyama = _umeyama(noisy, template_points("arcface_128", 128))
    np.testing.assert_allclose(matrix, umeyama, atol=1e-4)
    assert not np.array_equal(matrix, umeyama)


def test_warp_is_bilinear_with_replicated_border():
    frame = np.random.default_rng(3).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    crop, matrix = warp_face(frame, LANDMARKS - [60, 50], "arcface_128", 128)  # reaches past the frame
    linear = cv2.warpAffine(frame, matrix, (128, 128), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    np.testing.assert_array_equal(crop, linear)  # INTER_AREA is bilinear in warpAffine
    constant = cv2.warpAffine(frame, matrix, (128, 128), flags=cv2.INTER_LINEAR)
    assert np.any(crop != constant)


def test_mask_area_points_and_region_ids_are_facefusions():
    from ffray.faces.masks import MASK_AREA_POINTS, MASK_REGION_IDS

    assert MASK_AREA_POINTS["upper-face"] == [0, 1, 2, *range(31, 36), 14, 15, 16, *range(26, 16, -1)]
    assert MASK_AREA_POINTS["lower-face"] == [*range(3, 14), *range(35, 30, -1)]
    assert MASK_AREA_POINTS["mouth"] == list(range(48, 68))
    assert MASK_REGION_IDS == {"skin": 1, "left-eyebrow": 2, "right-eyebrow": 3, "left-eye": 4, "right-eye": 5,
                               "glasses": 6, "nose": 10, "mouth": 11, "upper-lip": 12, "lower-lip": 13}


def test_five_from_sixty_eight_and_face_angle():
    points = np.zeros((68, 2))
    points[36:42] = [10, 20]
    points[42:48] = [30, 20]
    points[30] = [20, 30]
    points[48], points[54] = [12, 40], [28, 40]
    points[0], points[16] = [0, 0], [40, 1]
    np.testing.assert_array_equal(landmark_5_from_68(points), [[10, 20], [30, 20], [20, 30], [12, 40], [28, 40]])
    assert estimate_face_angle(points) == 0
    points[0], points[16] = [0, 0], [1, 40]  # jaw running downwards: rotated 90 degrees
    assert estimate_face_angle(points) == 90


def test_box_mask_numbers_and_shape():
    assert box_mask_numbers(128, 0.3) == (19, 9, 4.75)
    assert box_mask_numbers(256, 0.3) == (38, 19, 9.5)
    assert box_mask_numbers(512, 0.3) == (76, 38, 19.0)
    mask = create_box_mask((128, 128), 0.3)
    reference = np.ones((128, 128), np.float32)
    reference[:9], reference[-9:], reference[:, :9], reference[:, -9:] = 0, 0, 0, 0
    np.testing.assert_array_equal(mask, cv2.GaussianBlur(reference, (0, 0), 4.75))
    padded = create_box_mask((100, 100), 0.0, (20, 0, 0, 10))  # no blur: hard border of max(1, padding)
    assert padded[:20].max() == 0 and padded[20:99, 10:99].min() == 1 and padded[:, :10].max() == 0
    assert padded[99].max() == 0 and padded[:, 99].max() == 0


def test_area_mask_and_min_combination():
    points = np.zeros((68, 2))
    points[48:68] = [[40, 60], [88, 60], [88, 100], [40, 100]] * 5
    mask = create_area_mask((128, 128), points, ["mouth"])
    assert mask[80, 64] == pytest.approx(1.0) and mask[10, 10] == 0
    combined = combine_masks([create_box_mask((128, 128), 0.3), mask])
    np.testing.assert_array_equal(combined, np.minimum(create_box_mask((128, 128), 0.3), mask).clip(0, 1))


def _full_frame_paste(frame, crop, mask, matrix):
    # FaceFusion 3.2's whole-frame paste-back, which the 3.3 region version must equal
    inverse = cv2.invertAffineTransform(matrix)
    size = frame.shape[:2][::-1]
    inverse_mask = cv2.warpAffine(mask, inverse, size).clip(0, 1)
    inverse_crop = cv2.warpAffine(crop, inverse, size, borderMode=cv2.BORDER_REPLICATE)
    out = frame.copy()
    for c in range(3):
        out[:, :, c] = inverse_mask * inverse_crop[:, :, c] + (1 - inverse_mask) * frame[:, :, c]
    return out


def test_paste_back_changes_nothing_outside_the_mask_and_truncates():
    rng = np.random.default_rng(1)
    frame = rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)
    original = frame.copy()
    crop, matrix = warp_face(frame, LANDMARKS, "arcface_128", 128)
    # a smooth float crop, as the swapper passes it (smooth so both warps interpolate alike)
    swapped = cv2.GaussianBlur(rng.uniform(0, 255, crop.shape), (0, 0), 4) + np.linspace(0, 60, 128)[:, None, None]
    mask = create_box_mask((128, 128), 0.3)
    out = paste_back(frame, swapped, mask, matrix)
    np.testing.assert_array_equal(frame, original)  # input untouched
    inverse_mask = cv2.warpAffine(mask, cv2.invertAffineTransform(matrix), (320, 240)).clip(0, 1)
    outside = inverse_mask == 0
    np.testing.assert_array_equal(out[outside], original[outside])
    assert (out[~outside] != original[~outside]).mean() > 0.5
    # the region warp equals the whole-frame warp up to OpenCV's fixed-point sub-pixel positions, which
    # move the mask edge by a hair (visible against this noise frame, so only a handful of levels)
    difference = np.abs(out.astype(int) - _full_frame_paste(frame, swapped, mask, matrix).astype(int))
    assert difference.max() <= 8 and difference.mean() < 0.05


def test_paste_back_handles_faces_at_and_beyond_the_border():
    frame = np.full((100, 100, 3), 50, np.uint8)
    crop, matrix = warp_face(frame, LANDMARKS - 60, "arcface_128", 128)  # partly outside
    out = paste_back(frame, np.full((128, 128, 3), 200.0), np.ones((128, 128), np.float32), matrix)
    assert out.shape == frame.shape and (out == 200).any()
    _, matrix = warp_face(frame, LANDMARKS + 1000, "arcface_128", 128)  # entirely outside
    np.testing.assert_array_equal(paste_back(frame, crop, np.ones((128, 128), np.float32), matrix), frame)


def test_blend_is_add_weighted():
    a = np.full((4, 4, 3), 100, np.uint8)
    b = np.full((4, 4, 3), 200, np.uint8)
    assert blend_frames(a, b, 0.8)[0, 0, 0] == 180


def _face(x, y, w, score=0.9, embedding=None):
    norm = None if embedding is None else np.asarray(embedding, np.float32) / np.linalg.norm(embedding)
    l5 = np.array([[x + w * 0.3, y + w * 0.4], [x + w * 0.7, y + w * 0.4], [x + w * 0.5, y + w * 0.6],
                   [x + w * 0.35, y + w * 0.8], [x + w * 0.65, y + w * 0.8]], np.float32)
    return Face(box=np.array([x, y, x + w, y + w], np.float32), score=score, landmark_5=l5, landmark_5_68=l5,
                embedding=None if embedding is None else np.asarray(embedding, np.float32), embedding_norm=norm)


def ids(faces):
    return [id(f) for f in faces]


def test_selection_modes_orders_and_reference_rule():
    a = _face(10, 10, 50, 0.7, [1, 0, 0])
    b = _face(100, 5, 80, 0.9, [0.5, 0.75 ** 0.5, 0])  # cosine 0.5 with a -> distance 0.25
    c = _face(200, 50, 30, 0.8, [0, 0, 1])  # cosine 0 with a -> distance 0.5
    faces = [a, b, c]
    assert ids(sort_faces(faces, "large-small")) == ids([b, a, c])
    assert ids(sort_faces(faces, "small-large")) == ids([c, a, b])
    assert ids(sort_faces(faces, "left-right")) == ids([a, b, c])
    assert ids(sort_faces(faces, "right-left")) == ids([c, b, a])
    assert ids(sort_faces(faces, "top-bottom")) == ids([b, a, c])
    assert ids(sort_faces(faces, "bottom-top")) == ids([c, a, b])
    assert ids(sort_faces(faces, "best-worst")) == ids([b, c, a])
    assert ids(sort_faces(faces, "worst-best")) == ids([a, c, b])
    assert ids(select_faces(faces, FaceOptions(face_selector_mode="many"))) == ids([b, a, c])
    assert ids(select_faces(faces, FaceOptions(face_selector_mode="one"))) == ids([b])
    assert face_distance(a, b) == pytest.approx(0.25) and face_distance(a, c) == pytest.approx(0.5)
    reference = FaceOptions(face_selector_mode="reference")
    # distance < 0.3 (cosine > 0.4); matches keep the detection order, unsorted (`find_match_faces`)
    assert ids(select_faces(faces, reference, reference=a)) == ids([a, b])
    assert ids(select_faces(faces, reference, reference=None)) == ids([])
    strict = FaceOptions(face_selector_mode="reference", reference_face_distance=0.2)
    assert ids(select_faces(faces, strict, reference=a)) == ids([a])
    # a pack's own distance plugs in
    assert ids(select_faces(faces, reference, reference=a, distance=lambda f, r: 0.0)) == ids([a, b, c])
    assert select_faces(faces, reference, reference=a, distance=lambda f, r: 0.3) == []  # strict <
    assert choose_reference_face(faces, FaceOptions(reference_face_position=1)) is a
    assert choose_reference_face(faces, FaceOptions(reference_face_position=9)) is c  # clamped
    assert largest_face(faces) is b and largest_face([]) is None


def test_area_order_is_computed_in_float64():
    a = _face(0, 0, 10)
    a.box = np.array([0, 0, 4097, 4097], np.float32)  # 16785409: rounds to 16785408 in float32
    b = _face(0, 0, 10)
    b.box = np.array([0, 0, 4096, 4098], np.float32)  # 16785408
    assert ids(sort_faces([b, a], "large-small")) == ids([a, b])
    assert largest_face([b, a]) is a


def test_face_distance_is_facefusions_float32_formula():
    rng = np.random.default_rng(4)
    float64_differs = 0
    for _ in range(20):
        a, b = (_face(0, 0, 10) for _ in range(2))
        for face in (a, b):  # float32 throughout, as ArcFace's output
            face.embedding = rng.standard_normal(512).astype(np.float32)
            face.embedding_norm = face.embedding / np.linalg.norm(face.embedding)
            assert face.embedding_norm.dtype == np.float32
        # `1 - dot` in float32, as FaceFusion's calculate_face_distance, then interp in float64
        dot = np.dot(a.embedding_norm, b.embedding_norm)
        expected = float(np.interp(1 - dot, [0, 2], [0, 1]))
        assert face_distance(a, b) == expected
        float64_differs += float(np.interp(1 - float(dot), [0, 2], [0, 1])) != expected
    assert float64_differs > 10  # the float32 step is visible: a float64 difference is another number


def test_average_identity_is_not_renormalised():
    a, b = _face(0, 0, 10, embedding=[1, 0]), _face(0, 0, 20, embedding=[0, 3])
    mean = average_identity([a, b])
    np.testing.assert_allclose(mean.embedding, [0.5, 1.5])
    np.testing.assert_allclose(mean.embedding_norm, [0.5, 0.5])  # mean of unit vectors, norm 0.707
    assert mean.landmark_5_68 is a.landmark_5_68
