import numpy as np

from ffray.faces.options import FaceOptions
from ffray.faces.types import Face, pack_faces, unpack_faces


def _face(seed: int, with_68: bool) -> Face:
    rng = np.random.default_rng(seed)
    return Face(box=rng.random(4, dtype=np.float32) * 100, score=0.9, landmark_5=rng.random((5, 2), dtype=np.float32),
                landmark_5_68=rng.random((5, 2), dtype=np.float32),
                landmark_68=rng.random((68, 2), dtype=np.float32) if with_68 else None, landmarker_score=0.7)


def test_pack_unpack_round_trip_keeps_frames_and_warp_points():
    faces = [[_face(1, True), _face(2, False)], [], [_face(3, True)]]
    restored = unpack_faces(pack_faces(faces), 3)
    assert [len(f) for f in restored] == [2, 0, 1]
    for before, after in zip([f for fs in faces for f in fs], [f for fs in restored for f in fs], strict=True):
        np.testing.assert_array_equal(before.box, after.box)
        np.testing.assert_array_equal(before.landmark_5_68, after.landmark_5_68)
        if before.landmark_68 is None:
            assert after.landmark_68 is None
        else:
            np.testing.assert_array_equal(before.landmark_68, after.landmark_68)


def test_pack_of_no_faces_has_typed_empty_columns():
    packed = pack_faces([[], []])
    assert packed["box"].shape == (0, 4) and packed["landmark_68"].shape == (0, 68, 2)
    assert unpack_faces(packed, 2) == [[], []]


def test_face_options_round_trip_through_dict():
    options = FaceOptions(face_mask_padding=(1, 2, 3, 4), face_detector_margin=(5, 5, 5, 5), face_selector_mode="many")
    assert FaceOptions.from_dict(options.to_dict()) == options
