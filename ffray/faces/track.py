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

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

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


class TrackLinker:
    """Links detections into tracks frame by frame, in frame order (step 1), holding only what a later
    frame can still need: each live track's last face, and per track its first and last frame and its
    faces' distances to the reference. Memory follows the faces on screen, not the video's length."""

    def __init__(self, options: TrackOptions, same_person: Callable[[Face, Face], bool] | None = None,
                 reference: Face | None = None, distance: Callable[[Face, Face], float] | None = None):
        self.options, self.same_person = options, same_person
        self.reference, self.distance = reference, distance
        self.frames = 0  # frames linked so far
        self.live: dict[int, tuple[int, Face]] = {}  # track id -> (last frame, last face)
        self.first: list[int] = []  # per track id
        self.last: list[int] = []
        self.distances: list[list[float]] = []  # per track id: its faces' distances to the reference

    def add(self, frame_faces: Sequence[Face]) -> list[int]:
        """The track id of each face of the next frame."""
        j = self.frames
        self.frames += 1
        live = {tid: seen for tid, seen in self.live.items() if j - seen[0] <= self.options.max_gap + 1}
        pairs = sorted(((box_iou(last.box, f.box), -tid, k) for tid, (_, last) in live.items()
                        for k, f in enumerate(frame_faces)), reverse=True)
        taken: set[int] = set()
        ids = [-1] * len(frame_faces)
        for iou, neg_id, k in pairs:
            tid = -neg_id
            if iou < self.options.min_iou or tid in taken or ids[k] != -1:
                continue
            if self.same_person is not None and not self.same_person(live[tid][1], frame_faces[k]):
                continue
            taken.add(tid)
            ids[k] = tid
        for k, face in enumerate(frame_faces):
            if ids[k] == -1:
                ids[k] = len(self.first)
                self.first.append(j)
                self.last.append(j)
                self.distances.append([])
            tid = ids[k]
            self.last[tid] = j
            live[tid] = (j, face)
            if self.reference is not None and self.distance is not None and face.embedding is not None:
                self.distances[tid].append(self.distance(face, self.reference))
        self.live = live
        return ids

    def median_distance(self, tid: int) -> float:
        values = self.distances[tid]
        return float(np.median(values)) if values else float("inf")


def link_tracks(faces: Sequence[Sequence[Face]], options: TrackOptions,
                same_person: Callable[[Face, Face], bool] | None = None) -> tuple[list[Track], list[list[int]]]:
    """(tracks, track id of each detection per frame), every track with all its faces."""
    linker = TrackLinker(options, same_person)
    tracks: list[Track] = []
    ids = []
    for j, frame_faces in enumerate(faces):
        frame_ids = linker.add(frame_faces)
        for tid, face in zip(frame_ids, frame_faces, strict=True):
            if tid == len(tracks):
                tracks.append(Track(tid))
            tracks[tid].frames.append(j)
            tracks[tid].faces.append(face)
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


def track_selection(faces: Sequence[Sequence[Face]], options: FaceOptions, track: TrackOptions,
                    reference: Face | None = None, distance: Callable[[Face, Face], float] | None = None,
                    source_faces: Sequence[Face] | None = None) -> list[list[Face]]:
    """The faces to swap in each frame, decided per track (see the module doc). `faces`: every detected
    face of every frame of the video, in frame order, as the analyser returned them."""
    (chosen,) = select_by_tracks([len(faces)], lambda i: list(faces), options, track, reference=reference,
                                 distance=distance, source_faces=source_faces)
    return chosen


def select_by_tracks(chunks: Sequence[int], load: Callable[[int], list[list[Face]]], options: FaceOptions,
                     track: TrackOptions, reference: Face | None = None,
                     distance: Callable[[Face, Face], float] | None = None,
                     source_faces: Sequence[Face] | None = None) -> Iterator[list[list[Face]]]:
    """`track_selection` of a video read chunk by chunk: `chunks` are the frame counts of its chunks in
    order, `load(i)` gives chunk i's faces per frame. Yields each chunk's faces to swap, in order. Each
    chunk is loaded twice (to link, then to decide) and at most a chunk and a few frames either side are
    held at once, so a feature-length video needs no more memory than a clip. Every frame gets exactly
    what deciding over the whole video at once gives: a frame's choice depends only on frames within
    `max_gap + 1 + smoothing` of it, beyond the per-track facts the linking pass keeps."""
    kwargs: dict[str, Any] = {"reference": reference, "source_faces": source_faces}
    if distance is not None:
        kwargs["distance"] = distance
    threshold = options.reference_distance

    def same_person(a: Face, b: Face) -> bool:
        if distance is None or a.embedding is None or b.embedding is None:
            return True
        return distance(a, b) < threshold

    by_reference = options.face_selector_mode == "reference" and reference is not None and distance is not None
    linker = TrackLinker(track, same_person, reference if by_reference else None, distance)
    ids: list[list[int]] = []
    for i in range(len(chunks)):
        ids += [linker.add(frame_faces) for frame_faces in load(i)]
    chosen_ids = {tid for tid in range(len(linker.first)) if linker.median_distance(tid) < threshold} \
        if by_reference else None
    reach = track.max_gap + 1 + track.smoothing  # frames either side a frame's choice can depend on
    window: list[list[Face]] = []  # faces of frames [low, low + len(window))
    low = loaded = 0  # first frame in the window; chunks loaded into it
    start = 0
    for count in chunks:
        end = start + count
        while loaded < len(chunks) and low + len(window) < end + reach:
            window += load(loaded)
            loaded += 1
        drop = max(0, start - reach - low)
        window, low = window[drop:], low + drop
        yield _decide(window, ids[low:low + len(window)], low, start, end, linker, chosen_ids, options, track,
                      kwargs)
        start = end


def _decide(faces: list[list[Face]], ids: list[list[int]], low: int, start: int, end: int, linker: TrackLinker,
            chosen_ids: set[int] | None, options: FaceOptions, track: TrackOptions,
            kwargs: dict[str, Any]) -> list[list[Face]]:
    """Steps 2-4 for frames [start, end) from the faces and track ids of frames [low, low + len(faces))."""
    chosen_at: dict[int, set[int]] = {}  # track id -> frames where the per-frame rule picks it
    if chosen_ids is not None:  # decided per track: a blurred frame or a one-frame look-alike decides nothing
        out = [[f for f, tid in zip(frame_faces, frame_ids, strict=True) if tid in chosen_ids]
               for frame_faces, frame_ids in zip(faces, ids, strict=True)]
    else:
        out = [list(select_faces(f, options, **kwargs)) for f in faces]
        for j, (frame_faces, frame_ids) in enumerate(zip(faces, ids, strict=True)):
            picked = {id(f) for f in out[j]}
            for face, tid in zip(frame_faces, frame_ids, strict=True):
                if id(face) in picked:
                    chosen_at.setdefault(tid, set()).add(j)
    tracks: dict[int, Track] = {}
    for j, (frame_faces, frame_ids) in enumerate(zip(faces, ids, strict=True)):
        for face, tid in zip(frame_faces, frame_ids, strict=True):
            tracks.setdefault(tid, Track(tid)).frames.append(j)
            tracks[tid].faces.append(face)
    for tid in sorted(tracks):
        tr = tracks[tid]
        if tid not in (chosen_ids if chosen_ids is not None else chosen_at):
            continue
        if chosen_ids is not None:  # that person, for all of the track
            span = set(range(linker.first[tid] - low, linker.last[tid] - low + 1))
        else:  # the frames the rule picks it, and the gaps between them
            marks = sorted(chosen_at[tid])
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
            if j not in span or not start <= low + j < end:
                continue
            current = out[j]
            original = next((f for f, t in zip(faces[j], ids[j], strict=False) if t == tid), None)
            if original is not None and any(f is original for f in current):
                if track.smoothing > 0:
                    out[j] = [face if f is original else f for f in current]
                continue
            # 'one' swaps one face: in a gap of the picked track that is the track's, not a stand-in
            out[j] = [face] if options.face_selector_mode == "one" else current + [face]
    return out[start - low:end - low]
