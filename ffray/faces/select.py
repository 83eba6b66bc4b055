"""Face selection as FaceFusion's `face_selector`: modes many / one / reference, ordering, and the
reference distance rule. Pure functions; the identity distance is a parameter so any pack can plug
in its own (the builtin dlib pack uses a Euclidean distance on 128-D descriptors).

Age, gender and race filters need FaceFusion's FairFace classifier, which ffray does not ship:
they are not supported.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ffray.faces.options import SELECTOR_MODES, SELECTOR_ORDERS, FaceOptions
from ffray.faces.types import Face

Distance = Callable[[Face, Face], float]


def face_distance(a: Face, b: Face) -> float:
    """FaceFusion's identity distance in [0, 1]: `interp(1 - dot(norm_a, norm_b), [0, 2], [0, 1])`.

    With the default threshold 0.3 two faces match when their cosine similarity exceeds 0.4.
    """
    if a.embedding_norm is None or b.embedding_norm is None:
        raise ValueError("face_distance needs embeddings; analyse with embed=True")
    # `1 - dot` stays in the embeddings' float32 as in FaceFusion (a float64 difference can flip a
    # comparison right at the threshold)
    cosine_distance = 1 - np.dot(a.embedding_norm, b.embedding_norm)
    return float(np.interp(cosine_distance, [0, 2], [0, 1]))


def _area(face: Face) -> float:
    # signed product as FaceFusion computes it (boxes are normalised, so never negative in practice), in
    # float64 as FaceFusion's float64 boxes: float32 arithmetic would tie areas that differ
    x1, y1, x2, y2 = (float(v) for v in face.box)
    return (x2 - x1) * (y2 - y1)


_ORDER_KEYS: dict[str, tuple[Callable[[Face], float], bool]] = {
    "left-right": (lambda f: float(f.box[0]), False),
    "right-left": (lambda f: float(f.box[0]), True),
    "top-bottom": (lambda f: float(f.box[1]), False),
    "bottom-top": (lambda f: float(f.box[1]), True),
    "small-large": (_area, False),
    "large-small": (_area, True),
    "best-worst": (lambda f: float(f.score), True),
    "worst-best": (lambda f: float(f.score), False),
}
assert set(_ORDER_KEYS) == set(SELECTOR_ORDERS)


def sort_faces(faces: Sequence[Face], order: str) -> list[Face]:
    """Stable sort as Python's `sorted` in FaceFusion (ties keep detection order)."""
    if order not in _ORDER_KEYS:
        raise ValueError(f"unknown face selector order {order!r}; choose from {', '.join(SELECTOR_ORDERS)}")
    key, reverse = _ORDER_KEYS[order]
    return sorted(faces, key=key, reverse=reverse)


def sort_and_filter_faces(faces: Sequence[Face], options: FaceOptions) -> list[Face]:
    # no age/gender/race filters: they need FairFace, which ffray does not ship
    return sort_faces(faces, options.face_selector_order)


def get_one_face(faces: Sequence[Face], position: int = 0) -> Face | None:
    """FaceFusion's `get_one_face`: the face at `position`, clamped to the last one; None if no faces."""
    if not faces:
        return None
    return faces[min(position, len(faces) - 1)]


def largest_face(faces: Sequence[Face]) -> Face | None:
    """The source face FaceFusion takes from each source image (`large-small`, first)."""
    return get_one_face(sort_faces(faces, "large-small"))


def choose_reference_face(reference_faces: Sequence[Face], options: FaceOptions) -> Face | None:
    """The reference face from a reference frame's (or image's) faces: sort/filter, then
    `reference_face_position` (clamped)."""
    return get_one_face(sort_and_filter_faces(reference_faces, options), options.reference_face_position)


def select_faces(faces: Sequence[Face], options: FaceOptions, reference: Face | None = None,
                 distance: Distance = face_distance) -> list[Face]:
    """Target faces to process in one frame, in processing order.

    `many`: all faces sorted; `one`: the first after sorting; `reference`: every face whose
    `distance` to `reference` is strictly below `reference_face_distance` (no reference: none), in the
    order given (detection order): FaceFusion's `find_match_faces` matches the unsorted target faces;
    only the reference frame's faces are sorted.
    """
    mode = options.face_selector_mode
    if mode not in SELECTOR_MODES:
        raise ValueError(f"unknown face selector mode {mode!r}; choose from {', '.join(SELECTOR_MODES)}")
    if mode == "reference":
        if reference is None:
            return []
        return [face for face in faces if distance(face, reference) < options.reference_face_distance]
    ordered = sort_and_filter_faces(faces, options)
    return ordered if mode == "many" else ordered[:1]


def average_identity(faces: Sequence[Face]) -> Face | None:
    """FaceFusion's `average_face_identity`: geometry of the first face, plain means of the raw and of the
    normalised embeddings (the mean of unit vectors is deliberately NOT re-normalised)."""
    if not faces:
        return None
    first = faces[0]
    embeddings = [f.embedding for f in faces]
    norms = [f.embedding_norm for f in faces]
    return Face(
        box=first.box,
        score=first.score,
        landmark_5=first.landmark_5,
        landmark_5_68=first.landmark_5_68,
        landmark_68=first.landmark_68,
        landmarker_score=first.landmarker_score,
        embedding=None if any(e is None for e in embeddings) else np.mean(embeddings, axis=0),
        embedding_norm=None if any(n is None for n in norms) else np.mean(norms, axis=0),
        extra=dict(first.extra),
    )
