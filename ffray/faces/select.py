"""Face selection as FaceFusion's `face_selector`: modes many / one / reference, ordering, the
age/gender/race filters and the reference distance rule. Pure functions; the identity distance is a
parameter so any pack can plug in its own (the builtin dlib pack uses a Euclidean distance on 128-D
descriptors).

The filters read FairFace's results from `Face.extra` ('gender', 'race', 'age' as a half-open (lo, hi)
range; see `ffray.faces.classify`); only the facefusion pack fills them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ffray.faces.options import SELECTOR_GENDERS, SELECTOR_MODES, SELECTOR_ORDERS, SELECTOR_RACES, FaceOptions
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


def resolve_gender_race(options: FaceOptions,
                        source_faces: Sequence[Face] | None = None) -> tuple[str | None, str | None]:
    """The gender and race to filter by, 'auto' replaced by the largest source face's values.

    FaceFusion's condition is `if source_faces and gender == 'auto' or race == 'auto'`, i.e.
    `(source_faces and gender == 'auto') or race == 'auto'`. Reproduced as written: with race 'auto'
    the block runs even without source faces, but then finds no source face and changes nothing, so
    the result equals the intended `source_faces and (gender == 'auto' or race == 'auto')`. An 'auto'
    left unresolved (no source faces) is no filter, as in FaceFusion ('auto' is not a gender/race).
    """
    gender, race = options.face_selector_gender, options.face_selector_race
    source_faces = list(source_faces or ())  # FaceFusion's list; None would crash its sort
    if source_faces and gender == "auto" or race == "auto":
        source_face = largest_face(source_faces)
        if source_face is not None:
            if gender == "auto":
                gender = source_face.extra.get("gender")
            if race == "auto":
                race = source_face.extra.get("race")
    return gender, race


def _age_overlaps(age: tuple[int, int] | None, start: int, end: int) -> bool:
    # FaceFusion: `set(face.age) & set(range(start, end))`, both half-open ranges
    return age is not None and max(age[0], start) < min(age[1], end)


def sort_and_filter_faces(faces: Sequence[Face], options: FaceOptions,
                          source_faces: Sequence[Face] | None = None) -> list[Face]:
    """FaceFusion's order: sort, then gender, race, age filters. `source_faces` resolve 'auto'."""
    faces = sort_faces(faces, options.face_selector_order)
    if not faces:
        return faces
    gender, race = resolve_gender_race(options, source_faces)
    if gender in SELECTOR_GENDERS[1:]:
        faces = [f for f in faces if f.extra.get("gender") == gender]
    if race in SELECTOR_RACES[1:]:
        faces = [f for f in faces if f.extra.get("race") == race]
    start, end = options.face_selector_age_start, options.face_selector_age_end
    # FaceFusion filters when either bound is truthy (0..0 is no filter) and crashes on a missing
    # bound; ffray reads a missing start as 0 and a missing end as 100
    if start or end:
        start, end = start or 0, 100 if end is None else end
        faces = [f for f in faces if _age_overlaps(f.extra.get("age"), start, end)]
    return faces


def get_one_face(faces: Sequence[Face], position: int = 0) -> Face | None:
    """FaceFusion's `get_one_face`: the face at `position`, clamped to the last one; None if no faces."""
    if not faces:
        return None
    return faces[min(position, len(faces) - 1)]


def largest_face(faces: Sequence[Face]) -> Face | None:
    """The source face FaceFusion takes from each source image (`large-small`, first)."""
    return get_one_face(sort_faces(faces, "large-small"))


def choose_reference_face(reference_faces: Sequence[Face], options: FaceOptions,
                          source_faces: Sequence[Face] | None = None) -> Face | None:
    """The reference face from a reference frame's (or image's) faces: sort/filter, then
    `reference_face_position` (clamped)."""
    return get_one_face(sort_and_filter_faces(reference_faces, options, source_faces),
                        options.reference_face_position)


def select_faces(faces: Sequence[Face], options: FaceOptions, reference: Face | None = None,
                 distance: Distance = face_distance, source_faces: Sequence[Face] | None = None) -> list[Face]:
    """Target faces to process in one frame, in processing order.

    `many`: all faces sorted; `one`: the first after sorting; `reference`: every face whose
    `distance` to `reference` is strictly below `options.reference_distance` (the option, else the pack's
    default; no reference: none), in the order given (detection order): FaceFusion's `find_match_faces`
    matches the unsorted, unfiltered target faces; only the reference frame's faces are sorted and
    filtered. `source_faces` resolve the 'auto' gender/race filters.
    """
    mode = options.face_selector_mode
    if mode not in SELECTOR_MODES:
        raise ValueError(f"unknown face selector mode {mode!r}; choose from {', '.join(SELECTOR_MODES)}")
    if mode == "reference":
        if reference is None:
            return []
        return [face for face in faces if distance(face, reference) < options.reference_distance]
    ordered = sort_and_filter_faces(faces, options, source_faces)
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
