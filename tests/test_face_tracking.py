"""Face tracks: a face chosen in one frame stays chosen through missed detections and blur, across a
chunk boundary, deterministically; `--face-tracking off` is FaceFusion's per-frame selection."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import asset
from pipeline_helpers import VIDEO, astronaut_clip, small_config, start_local_ray, video_frames

from ffray.faces.options import FaceOptions
from ffray.faces.select import choose_reference_face, select_faces
from ffray.faces.track import TrackOptions, link_tracks, track_selection
from ffray.faces.types import Face


def _face(x: float, y: float = 50.0, size: float = 40.0) -> Face:
    box = np.array([x, y, x + size, y + size], np.float32)
    points = np.array([[x + 12, y + 15], [x + 28, y + 15], [x + 20, y + 24], [x + 14, y + 32], [x + 26, y + 32]],
                      np.float32)
    return Face(box=box, score=0.9, landmark_5=points, landmark_5_68=points.copy())


def test_a_gap_is_filled_by_interpolation_and_a_long_one_is_not():
    options = FaceOptions(pack="builtin", face_selector_mode="many")
    faces = [[_face(10 + 2 * j)] for j in range(10)]
    faces[4] = faces[5] = []  # the detector missed two frames
    chosen = track_selection(faces, options, TrackOptions(max_gap=3))
    assert [len(f) for f in chosen] == [1] * 10
    assert np.allclose(chosen[4][0].box, [18, 50, 58, 90]) and chosen[4][0].extra["interpolated"]
    assert chosen[3][0] is faces[3][0]  # detected faces are passed on untouched
    faces[3] = faces[6] = []  # four missing: longer than the gap
    assert [len(f) for f in track_selection(faces, options, TrackOptions(max_gap=3))][2:8] == [1, 0, 0, 0, 0, 1]
    assert track_selection(faces, options, TrackOptions(max_gap=3)) == track_selection(faces, options,
                                                                                        TrackOptions(max_gap=3))


def test_tracks_follow_boxes_and_keep_two_people_apart():
    faces = [[_face(10 + j), _face(200 - j)] for j in range(6)]
    tracks, ids = link_tracks(faces, TrackOptions())
    assert len(tracks) == 2 and all(len(t.frames) == 6 for t in tracks)
    assert all(frame_ids == ids[0] for frame_ids in ids)


def test_smoothing_takes_jitter_out_of_the_landmarks():
    rng = np.random.default_rng(0)
    faces = []
    for j in range(30):
        f = _face(10 + j)
        f.landmark_5_68 = f.landmark_5_68 + rng.normal(0, 1.5, (5, 2)).astype(np.float32)
        faces.append([f])
    options = FaceOptions(pack="builtin", face_selector_mode="many")

    def jitter(chosen):
        points = np.stack([f[0].landmark_5_68 for f in chosen])
        return float(np.abs(np.diff(points, n=2, axis=0)).mean())

    assert jitter(track_selection(faces, options, TrackOptions(smoothing=2))) < 0.5 * jitter(faces)


@pytest.mark.slow
def test_reference_face_stays_swapped_through_the_frames_video_01_drops():
    """The builtin pack on video_01 in reference mode: per frame the chosen woman is lost on frames 22,
    25 and 26 (and the young man, position 1, on frame 23); followed as a track she is never lost."""
    from ffray.faces.packs import load_analyser
    from ffray.media import decode_all

    frames = [image for _, image in decode_all(str(asset(VIDEO)))][:32]
    for position, dropped in ((0, [22, 25, 26]), (1, [23])):
        options = FaceOptions(pack="builtin", face_selector_mode="reference", reference_face_position=position,
                              face_detector_model="hog")
        analyser = load_analyser(options)
        faces = analyser.analyse(frames)
        reference = choose_reference_face(faces[0], options, ())
        per_frame = [select_faces(f, options, reference=reference, distance=analyser.face_distance) for f in faces]
        assert [j for j, f in enumerate(per_frame) if not f] == dropped
        tracked = track_selection(faces, options, TrackOptions(), reference=reference,
                                  distance=analyser.face_distance)
        assert [len(f) for f in tracked] == [1] * len(frames)


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")
def test_a_blanked_face_across_a_chunk_boundary_is_swapped(tmp_path, tmp_path_factory):
    """Frames 11 and 12 of a clip lose the face (blanked), and chunk 0 ends between them: with tracking
    the face is swapped there too (its box and landmarks interpolated across the boundary); off, those
    two frames come out as the source."""
    import av
    import ray

    from ffray.pipeline.driver import VideoRequest, run_swap

    clean = astronaut_clip(tmp_path / "clean.mp4", 24)
    frames, _ = video_frames(clean)
    blank = (slice(30, 100), slice(105, 172))  # the astronaut's face at 320x256: box 112,38-165,91
    clip = tmp_path / "gap.mp4"
    with av.open(str(clip), "w") as out:
        stream = out.add_stream("libx264", rate=24, options={"crf": "12"})
        stream.width, stream.height, stream.pix_fmt = 320, 256, "yuv420p"
        for j, image in enumerate(frames):
            image = image.copy()
            if j in (11, 12):
                image[blank] = 128
            out.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")))
        out.mux(stream.encode())
    source = asset("media/meds-aa-S001-01.jpg")
    start_local_ray(tmp_path_factory.mktemp("ray"), num_cpus=4, num_gpus=4)  # short: Ray's socket paths
    try:
        outputs = {}
        for tracking in ("on", "off"):
            options = FaceOptions(pack="builtin", face_selector_mode="one", face_tracking=tracking)
            output = tmp_path / f"out-{tracking}.mp4"
            result = run_swap([VideoRequest(str(clip), str(output), (str(source),))], options,
                              small_config(tmp_path / f"work-{tracking}", chunk_frames=12))
            (res,) = result.videos
            assert res.status == "done", res.error
            detector = result.report["stages"]["detector"]
            if tracking == "on":  # faces were chosen by the tracking pass: the swap pass's detector ran no model
                assert detector["model_s"] == 0 and detector["cache_hits"] == detector["chunks"] == 2
                assert result.report["stages"]["analysis"]["chunks"] == 2
            else:
                assert detector["cache_hits"] == 0 and "analysis" not in result.report["stages"]
            outputs[tracking] = video_frames(output)[0]
    finally:
        ray.shutdown()
    src = video_frames(clip)[0]
    for j in (11, 12):
        changed_on = np.abs(outputs["on"][j][blank].astype(int) - src[j][blank].astype(int)).mean()
        changed_off = np.abs(outputs["off"][j][blank].astype(int) - src[j][blank].astype(int)).mean()
        # off: the grey frame only re-encoded; on: a face pasted onto it (low contrast: the builtin pack
        # matches the colours of the grey it lands on)
        assert changed_off < 1 and changed_on > 4 * max(changed_off, 0.5), (j, changed_on, changed_off)
    for j in (5, 18):  # elsewhere both swap the detected face the same way (encoded beside other frames)
        assert np.abs(outputs["on"][j].astype(int) - outputs["off"][j].astype(int)).mean() < 1


def _same_choice(a: list[list[Face]], b: list[list[Face]]) -> bool:
    """Equal selections: detected faces are the very objects; interpolated or smoothed ones equal numbers."""
    return len(a) == len(b) and all(
        len(x) == len(y) and all((f is g) or (np.array_equal(f.box, g.box) and np.array_equal(f.landmark_5_68,
                                                                                           g.landmark_5_68)
                                              and f.extra == g.extra) for f, g in zip(x, y, strict=True))
        for x, y in zip(a, b, strict=True))


@pytest.mark.slow
def test_deciding_chunk_by_chunk_equals_deciding_over_the_whole_video():
    """The driver decides a video a chunk at a time (select_by_tracks); every chunking gives what one
    decision over the whole video gives, with gaps across chunk boundaries and smoothing too: video_01's
    real YuNet faces (builtin pack, embeddings), with detections knocked out in runs of 1-4 frames."""
    from ffray.faces.packs import load_analyser
    from ffray.faces.track import select_by_tracks
    from ffray.media import decode_all

    frames = [image for _, image in decode_all(str(asset(VIDEO)))][:60]
    rng = np.random.default_rng(5)
    analyser = load_analyser(FaceOptions(pack="builtin", face_selector_mode="reference"))
    faces = analyser.analyse(frames)  # with embeddings: every mode selects from these
    for mode, position in (("reference", 0), ("reference", 2), ("one", 0), ("many", 0)):
        options = FaceOptions(pack="builtin", face_selector_mode=mode, reference_face_position=position)
        holed = [list(f) for f in faces]
        for j in rng.choice(len(holed) - 4, 8, replace=False):
            k = rng.integers(0, 5)
            for g in range(j, j + rng.integers(1, 5)):
                holed[g] = [f for i, f in enumerate(holed[g]) if i != k]
        reference = choose_reference_face(holed[0], options, ()) if mode == "reference" else None
        kwargs = {"reference": reference, "distance": analyser.face_distance}
        for smoothing in (0, 2):
            tracking = TrackOptions(smoothing=smoothing)
            whole = track_selection(holed, options, tracking, **kwargs)
            assert sum(len(f) for f in whole) > 0
            for size in (1, 4, 7, 25):
                counts = [min(size, len(holed) - s) for s in range(0, len(holed), size)]
                starts = np.cumsum([0, *counts])
                loads: list[int] = []

                def load(i, starts=starts, loads=loads, holed=holed):
                    loads.append(i)
                    return holed[starts[i]:starts[i + 1]]

                chunked = [f for chunk in select_by_tracks(counts, load, options, tracking, **kwargs) for f in chunk]
                assert _same_choice(chunked, whole), (mode, position, smoothing, size)
                assert max(loads.count(i) for i in set(loads)) <= 2 + (tracking.max_gap + 1 + smoothing) // size + 1


def test_deciding_a_long_video_holds_a_window_not_the_video():
    """Two hours of faces would not fit in the driver: 6,000 frames of three people with 512-float
    embeddings (37 MB of faces in all) are decided holding a few chunks at a time."""
    import tracemalloc

    from ffray.faces.track import select_by_tracks

    people = np.random.default_rng(1).normal(size=(3, 512)).astype(np.float32)

    def frame_faces(j: int) -> list[Face]:
        out = []
        for p in range(3):
            if (j + 7 * p) % 50 == 0:
                continue  # a missed detection now and then
            f = _face(10 + 120 * p + (j % 5))
            f.embedding = people[p] + np.float32(0.01) * np.sin(j + np.arange(512, dtype=np.float32))
            out.append(f)
        return out

    options = FaceOptions(pack="builtin", face_selector_mode="reference", reference_face_distance=0.5)
    reference = frame_faces(1)[1]

    def distance(a: Face, b: Face) -> float:
        return float(np.abs(a.embedding - b.embedding).mean())

    counts = [60] * 100
    tracemalloc.start()
    try:
        chosen_per_chunk = [sum(len(f) for f in chunk) for chunk in select_by_tracks(
            counts, lambda i: [frame_faces(j) for j in range(60 * i, 60 * i + 60)], options,
            TrackOptions(smoothing=2), reference=reference, distance=distance)]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sum(chosen_per_chunk) == 6000  # person 1 in every frame: the misses are filled in
    assert peak < 8 * 2**20, peak  # the faces of the whole video are ~37 MB
