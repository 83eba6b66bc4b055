"""Face tracks: the same face followed from frame to frame, so that a face chosen in one frame stays
chosen through camera blur, a turned head or a frame the detector misses.

FaceFusion selects faces per frame: in reference mode a face whose embedding drifts past the distance
threshold for one blurred frame is not swapped there, and its own face pops back for that frame; a frame
where the detector finds nothing is not swapped at all. Here, per video, in frame order:
1. Link: each detection joins the live track whose last box overlaps it most (IoU >= `min_iou`; with
   embeddings on both sides, only when their distance is below the pack's threshold too), greedily by
   overlap; the rest start tracks. A track not seen for more than `max_gap` frames ends.
2. Decide per track. Reference mode: a track is that person when the median distance of its faces
   to the reference is below the threshold, and then in every frame of the track, so neither a
   blurred frame (distance over the threshold) nor a one-frame look-alike (under it) decides. 'one'
   and 'many': FaceFusion's own per-frame rule (`select.select_faces`) picks, and a track it picks is
   kept through the gaps between the frames where it is picked.
3. Fill gaps of up to `max_gap` frames inside a selected track by interpolating its box and landmarks
   linearly between the detections around the gap.
4. Smooth (optional, `smoothing` > 0): the warp points of each selected track are averaged over
   +-`smoothing` frames (a centred moving average, shorter at the track's ends), which takes the
   frame-to-frame jitter of the detector out of the swapped face.
Faces a track does not change keep their detected numbers exactly (interpolated and smoothed ones
are new); `--face-tracking off` is FaceFusion's per-frame selection. Everything is deterministic: the same detections always give the same faces.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from ffray.faces.options import FaceOptions
from ffray.faces.select import select_faces
from ffray.faces.types import Face


@dataclass(frozen=True)
class TrackOptions:
    max_gap: int = 3  # frames a track may miss and still be filled in
    smoothing: int = 0  # landmark smoothing half-window in frames; 0 = none
    min_iou: float = 0.3


@dataclass
class Track:
    id: int
    frames: list[int] = field(default_factory=list)
    faces: list[Face] = field(default_factory=list)

    @property
    def last_box(self) -> np.ndarray:
        return self.faces[-1].box


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, float(x2 - x1)) * max(0.0, float(y2 - y1))
    union = float((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])) - inter
    return inter / union if union > 0 else 0.0


def link_tracks(faces: Sequence[Sequence[Face]], options: TrackOptions,
                same_person: Callable[[Face, Face], bool] | None = None) -> tuple[list[Track], list[list[int]]]:
    """(tracks, track id of each detection per frame)."""
    tracks: list[Track] = []
    ids: list[list[int]] = []
    for j, frame_faces in enumerate(faces):
        live = [t for t in tracks if j - t.frames[-1] <= options.max_gap + 1]
        pairs = sorted(((box_iou(t.last_box, f.box), -t.id, k) for t in live for k, f in enumerate(frame_faces)),
                       reverse=True)
        taken_tracks: set[int] = set()
        frame_ids = [-1] * len(frame_faces)
        by_id = {t.id: t for t in live}
        for iou, neg_id, k in pairs:
            track = by_id[-neg_id]
            if iou < options.min_iou or track.id in taken_tracks or frame_ids[k] != -1:
                continue
            if same_person is not None and not same_person(track.faces[-1], frame_faces[k]):
                continue
            taken_tracks.add(track.id)
            frame_ids[k] = track.id
        for k, face in enumerate(frame_faces):
            if frame_ids[k] == -1:
                tracks.append(Track(len(tracks)))
                frame_ids[k] = tracks[-1].id
            track = tracks[frame_ids[k]]
            track.frames.append(j)
            track.faces.append(face)
        ids.append(frame_ids)
    return tracks, ids


def _interpolated(a: Face, b: Face, t: float) -> Face:
    def mix(x, y):
        if x is None or y is None:
            return None
        return (np.asarray(x, np.float64) * (1 - t) + np.asarray(y, np.float64) * t).astype(np.float32)

    return Face(box=mix(a.box, b.box), score=min(a.score, b.score), landmark_5=mix(a.landmark_5, b.landmark_5),
                landmark_5_68=mix(a.landmark_5_68, b.landmark_5_68), landmark_68=mix(a.landmark_68, b.landmark_68),
                landmarker_score=min(a.landmarker_score, b.landmarker_score),
                extra={"interpolated": True})


def _smoothed(track_frames: list[int], faces: list[Face], half: int) -> list[Face]:
    points = np.stack([np.asarray(f.landmark_5_68, np.float64) for f in faces])
    out = []
    for k, face in enumerate(faces):
        lo, hi = max(0, k - half), min(len(faces), k + half + 1)
        window = [i for i in range(lo, hi) if abs(track_frames[i] - track_frames[k]) <= half]
        out.append(replace(face, landmark_5_68=points[window].mean(axis=0).astype(np.float32)))
    return out


def _median_distance(track: Track, reference: Face, distance: Callable[[Face, Face], float]) -> float:
    values = [distance(f, reference) for f in track.faces if f.embedding is not None]
    return float(np.median(values)) if values else float("inf")


def track_selection(faces: Sequence[Sequence[Face]], options: FaceOptions, track: TrackOptions,
                    reference: Face | None = None, distance: Callable[[Face, Face], float] | None = None,
                    source_faces: Sequence[Face] | None = None) -> list[list[Face]]:
    """The faces to swap in each frame, decided per track (see the module doc). `faces`: every detected
    face of every frame of the video, in frame order, as the analyser returned them."""
    kwargs = {"reference": reference, "source_faces": source_faces}
    if distance is not None:
        kwargs["distance"] = distance
    per_frame = [select_faces(f, options, **kwargs) for f in faces]
    threshold = options.reference_distance

    def same_person(a: Face, b: Face) -> bool:
        if distance is None or a.embedding is None or b.embedding is None:
            return True
        return distance(a, b) < threshold

    tracks, ids = link_tracks(faces, track, same_person)
    chosen_at: dict[int, set[int]] = {}  # track id -> frames where the per-frame rule picks it
    for j, (frame_faces, frame_ids) in enumerate(zip(faces, ids, strict=True)):
        picked = {id(f) for f in per_frame[j]}
        for face, tid in zip(frame_faces, frame_ids, strict=True):
            if id(face) in picked:
                chosen_at.setdefault(tid, set()).add(j)
    out: list[list[Face]] = [list(p) for p in per_frame]
    by_reference = options.face_selector_mode == "reference" and reference is not None and distance is not None
    if by_reference:  # decided per track: a blurred frame or a one-frame look-alike decides nothing
        chosen_ids = {tr.id for tr in tracks if _median_distance(tr, reference, distance) < threshold}
        out = [[f for f, tid in zip(frame_faces, frame_ids, strict=True) if tid in chosen_ids]
               for frame_faces, frame_ids in zip(faces, ids, strict=True)]
        chosen_at = {tid: set(tracks[tid].frames) for tid in chosen_ids}
    for tr in tracks:
        picked = chosen_at.get(tr.id)
        if not picked:
            continue
        if by_reference:
            span = set(range(tr.frames[0], tr.frames[-1] + 1))  # that person, for all of the track
        else:  # the frames the rule picks it, and the gaps between them
            marks = sorted(picked)
            span = set(marks)
            for a, b in zip(marks, marks[1:], strict=False):
                if b - a - 1 <= track.max_gap:
                    span.update(range(a + 1, b))
        filled_frames, filled_faces = [], []
        for k, (j, face) in enumerate(zip(tr.frames, tr.faces, strict=True)):
            if k and j - tr.frames[k - 1] > 1 and j - tr.frames[k - 1] - 1 <= track.max_gap:
                a, b, before = tr.faces[k - 1], face, tr.frames[k - 1]
                for g in range(before + 1, j):
                    filled_frames.append(g)
                    filled_faces.append(_interpolated(a, b, (g - before) / (j - before)))
            filled_frames.append(j)
            filled_faces.append(face)
        if track.smoothing > 0:
            filled_faces = _smoothed(filled_frames, filled_faces, track.smoothing)
        for j, face in zip(filled_frames, filled_faces, strict=True):
            if j not in span:
                continue
            current = out[j]
            original = next((f for f, tid in zip(faces[j], ids[j], strict=False) if tid == tr.id), None)
            if original is not None and any(f is original for f in current):
                if track.smoothing > 0:
                    out[j] = [face if f is original else f for f in current]
                continue
            # 'one' swaps one face: in a gap of the picked track that is the track's, not a stand-in
            out[j] = [face] if options.face_selector_mode == "one" else current + [face]
    return out
