"""Face tracking: drop-outs and landmark jitter with tracking off (FaceFusion's per-frame selection) and on.

    python benchmarks/tracking.py [--json] [--frames 90]

On `video_01.mp4` (five people) with the builtin pack as a new user runs it, in reference mode (positions
0 and 1), 'one' and 'many', and on a generated clip whose one face is blanked for 2 frames:
- drop-outs: (track, frame) pairs where a face the job follows exists (between the first and last frame
  of a selected track) but no swapped face covers it (IoU >= 0.5 with the track's box there, interpolated
  where the detector missed it). Selected tracks are those the tracker decides on.
- jitter: mean frame-to-frame acceleration (px) of the swapped faces' 5 warp points along each track,
  |p[t+1] - 2 p[t] + p[t-1]|, over consecutive swapped frames; with smoothing 0 and 2.
Selection only (the analysis is the pipeline's own; the swap is not run): the figures count which faces
a job would swap, which is what drop-outs are.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
ASSETS = Path(os.environ.get("FFRAY_TEST_ASSETS", REPO.parent / "shared" / "assets"))


def _box_at(track, j: int) -> np.ndarray:
    frames = np.array(track.frames)
    boxes = np.stack([f.box for f in track.faces]).astype(np.float64)
    return np.array([np.interp(j, frames, boxes[:, c]) for c in range(4)])


def figures(faces, options, tracking, reference, distance) -> dict:
    from ffray.faces.select import select_faces
    from ffray.faces.track import TrackOptions, box_iou, link_tracks, track_selection

    per_frame = [select_faces(f, options, reference=reference, distance=distance) for f in faces]
    tracked = track_selection(faces, options, tracking, reference=reference, distance=distance)
    tracks, _ = link_tracks(faces, tracking, None if reference is None else
                            (lambda a, b: a.embedding is None or b.embedding is None
                             or distance(a, b) < options.reference_distance))
    # the tracks the job follows: those whose detections the tracked selection swaps somewhere
    unsmoothed = track_selection(faces, options, TrackOptions(max_gap=tracking.max_gap), reference=reference,
                                 distance=distance)
    swapped_ids = {id(f) for frame in unsmoothed for f in frame}
    followed = [t for t in tracks if any(id(f) in swapped_ids for f in t.faces)]
    out = {}
    for name, chosen in (("off", per_frame), ("on", tracked)):
        drops, accel = 0, []
        for t in followed:
            points = []
            for j in range(t.frames[0], t.frames[-1] + 1):
                box = _box_at(t, j)
                hit = next((f for f in chosen[j] if box_iou(box, f.box) >= 0.5), None)
                if hit is None:
                    drops += 1
                    points.append(None)
                else:
                    points.append(np.asarray(hit.landmark_5_68, np.float64))
            for a, b, c in zip(points, points[1:], points[2:], strict=False):
                if a is not None and b is not None and c is not None:
                    accel.append(float(np.abs(c - 2 * b + a).mean()))
        out[name] = {"dropouts": drops, "jitter_px": round(float(np.mean(accel)), 3) if accel else None}
    return out


def blanked_clip(folder: Path) -> Path:
    import av
    from pipeline_helpers import astronaut_clip, video_frames

    frames, _ = video_frames(astronaut_clip(folder / "clean.mp4", 24))
    clip = folder / "gap.mp4"
    with av.open(str(clip), "w") as out:
        stream = out.add_stream("libx264", rate=24, options={"crf": "12"})
        stream.width, stream.height, stream.pix_fmt = 320, 256, "yuv420p"
        for j, image in enumerate(frames):
            image = image.copy()
            if j in (11, 12):  # the face gone for two frames, across the boundary of 12-frame chunks
                image[30:100, 105:172] = 128
            out.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")))
        out.mux(stream.encode())
    return clip


def main() -> int:
    import tempfile

    from ffray.faces.options import FaceOptions
    from ffray.faces.packs import load_analyser
    from ffray.faces.select import choose_reference_face
    from ffray.faces.track import TrackOptions
    from ffray.media import decode_all

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--frames", type=int, default=90)
    args = parser.parse_args()
    clips = {"video_01": str(ASSETS / "media" / "video_01.mp4"),
             "blanked (2 frames, chunk boundary)": str(blanked_clip(Path(tempfile.mkdtemp())))}
    cases = [("video_01", "reference", 0), ("video_01", "reference", 1), ("video_01", "one", 0),
             ("video_01", "many", 0), ("blanked (2 frames, chunk boundary)", "one", 0)]
    analysed = {}
    results = []
    for clip, mode, position in cases:
        options = FaceOptions(pack="builtin", face_selector_mode=mode, reference_face_position=position)
        analyser = load_analyser(options)
        if (clip, mode == "reference") not in analysed:
            frames = [image for _, image in decode_all(clips[clip])][:args.frames]
            analysed[(clip, mode == "reference")] = analyser.analyse(frames)
        faces = analysed[(clip, mode == "reference")]
        reference = choose_reference_face(faces[0], options, ()) if mode == "reference" else None
        distance = analyser.face_distance if mode == "reference" else None
        row = {"clip": clip, "mode": mode + (f" position {position}" if mode == "reference" else "")}
        for smoothing in (0, 2):
            got = figures(faces, options, TrackOptions(smoothing=smoothing), reference, distance)
            row[f"smoothing {smoothing}"] = got
        results.append(row)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"{'clip':<36}{'mode':<22}{'drop-outs off/on':>18}{'jitter px off/on/on+smooth2':>30}")
    for r in results:
        s0, s2 = r["smoothing 0"], r["smoothing 2"]
        print(f"{r['clip']:<36}{r['mode']:<22}{s0['off']['dropouts']:>9}/{s0['on']['dropouts']:<8}"
              f"{s0['off']['jitter_px']!s:>14}/{s0['on']['jitter_px']!s}/{s2['on']['jitter_px']!s}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
