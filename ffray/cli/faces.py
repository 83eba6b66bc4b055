"""`ffray faces VIDEO|IMAGE [--frame N | --time T] [--output sheet.png] [--json]`: the faces of one frame
as a job with the same options sees them, numbered as the swap counts them.

Exit codes (ffray/errors.py): 0 listed; 2 bad input or options (a missing or unreadable file, a frame
number out of range, an existing sheet without --overwrite); 3 model unavailable.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

DESCRIPTION = """\
List the faces of one frame of a video (default frame 0) or of an image, analysed with the face options
a job would use (every face option and the --config file of `ffray swap`), in the order the swap counts
them (--face-selector-order): POS is the number --reference-face-position takes and the face 'one' mode
swaps first is POS 0; faces the age/gender/race filters drop have no POS. For each face: its box and
detector score, age/gender/race where the pack has a classifier (facefusion: FairFace), in reference
mode its identity distance to the reference face (on the pack's scale; see --reference-face-distance),
and whether a job would swap it in this frame. --output writes a contact sheet: the frame (upright) with
numbered boxes (green: would be swapped), and below it each face's crop labelled with its POS.
"""

THUMB = 128  # contact sheet: face crop cell, px square
LABEL = 24  # px of label band under each crop
SELECTED_COLOUR = (60, 200, 60)  # BGR
OTHER_COLOUR = (60, 60, 230)


def register(subparsers) -> None:
    from ffray.cli.preview import add_frame_arguments, add_job_arguments

    parser = subparsers.add_parser("faces", help="list (and draw) the faces of one frame, numbered as the swap "
                                   "counts them", description=DESCRIPTION,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target", metavar="VIDEO|IMAGE")
    add_frame_arguments(parser)
    parser.add_argument("--output", "-o", default=None, metavar="SHEET.png",
                        help="write a contact sheet image (format by extension; default: none)")
    parser.add_argument("--overwrite", action="store_true", help="replace the sheet if it exists (never an input)")
    parser.add_argument("--json", action="store_true", help="print a JSON list of the faces instead of a table")
    parser.add_argument("--source", "-s", dest="sources", nargs="+", default=None, metavar="IMG",
                        help="the job's source image(s): only used to resolve --face-selector-gender/race auto "
                             "(default: none, so 'auto' filters nothing)")
    parser.add_argument("--no-classify", dest="classify", action="store_false",
                        help="facefusion pack: skip age/gender/race unless a selector filter needs them "
                             "(saves loading --face-classifier-model)")
    add_job_arguments(parser)
    parser.set_defaults(func=run)


def describe_faces(faces, options, selected, reference, distance, source_faces=()) -> list[dict[str, Any]]:
    """One dict per face, in --face-selector-order: `position` (what --reference-face-position counts;
    None when a filter drops the face), box, score, age/gender/race (None where unknown), `distance` to
    the reference (reference mode), `selected`, `reference` (it is the reference face itself)."""
    import numpy as np

    from ffray.faces.select import sort_and_filter_faces, sort_faces

    kept = {id(f): n for n, f in enumerate(sort_and_filter_faces(faces, options, source_faces))}
    chosen = {id(f) for f in selected}
    rows = []
    for face in sort_faces(faces, options.face_selector_order):
        age = face.extra.get("age")
        # the reference frame analysed again gives equal faces, not the same objects
        same = reference is not None and (reference is face or (
            np.array_equal(reference.box, face.box) and np.array_equal(reference.landmark_5_68, face.landmark_5_68)))
        rows.append({
            "position": kept.get(id(face)),
            "box": [round(float(v), 1) for v in face.box],
            "score": round(float(face.score), 4),
            "age": None if age is None else [int(age[0]), int(age[1])],
            "gender": face.extra.get("gender"),
            "race": face.extra.get("race"),
            "distance": None if reference is None else round(float(distance(face, reference)), 4),
            "selected": id(face) in chosen,
            "reference": bool(same),
            "_face": face,
        })
    return rows


def public(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in row.items() if not k.startswith("_")} for row in rows]


def table(rows: list[dict[str, Any]], with_distance: bool) -> str:
    header = ["POS", "BOX x1,y1,x2,y2", "SIZE", "SCORE", "AGE", "GENDER", "RACE"]
    header += ["DISTANCE"] if with_distance else []
    header += ["SWAPPED"]
    lines = [header]
    for row in rows:
        x1, y1, x2, y2 = row["box"]
        age = "-" if row["age"] is None else f"{row['age'][0]}-{row['age'][1]}"
        cells = ["-" if row["position"] is None else str(row["position"]),
                 f"{x1:.0f},{y1:.0f},{x2:.0f},{y2:.0f}", f"{x2 - x1:.0f}x{y2 - y1:.0f}", f"{row['score']:.3f}",
                 age, row["gender"] or "-", row["race"] or "-"]
        if with_distance:
            cells.append("-" if row["distance"] is None else f"{row['distance']:.3f}")
        cells.append(("yes" if row["selected"] else "no") + (" (reference)" if row["reference"] else ""))
        lines.append(cells)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines)


def _label(row: dict[str, Any]) -> str:
    return "-" if row["position"] is None else str(row["position"])


def _crop(image, box):
    """A THUMB x THUMB square around the box (40% margin), edge pixels repeated where it leaves the frame."""
    import cv2

    x1, y1, x2, y2 = box
    side = max(int(round(max(x2 - x1, y2 - y1) * 1.4)), 2)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    left, top = int(round(cx - side / 2)), int(round(cy - side / 2))
    h, w = image.shape[:2]
    pad = max(0, -left, -top, left + side - w, top + side - h)
    padded = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REPLICATE) if pad else image
    crop = padded[top + pad:top + pad + side, left + pad:left + pad + side]
    return cv2.resize(crop, (THUMB, THUMB), interpolation=cv2.INTER_AREA if side > THUMB else cv2.INTER_LINEAR)


def sheet_shape(frame_shape: tuple[int, ...], faces: int) -> tuple[int, int]:
    """(height, width) of the contact sheet: the frame, then rows of THUMB + LABEL cells."""
    height, width = frame_shape[:2]
    per_row = max(1, width // THUMB)
    rows = -(-faces // per_row)
    return height + rows * (THUMB + LABEL), max(width, THUMB)


def contact_sheet(image, rows: list[dict[str, Any]]):
    """The frame with each face's box and POS drawn (green: would be swapped), and under it each face's
    crop (from the clean frame) labelled with its POS."""
    import cv2
    import numpy as np

    height, width = image.shape[:2]
    sheet = np.full((*sheet_shape(image.shape, len(rows)), 3), 32, np.uint8)
    framed = image.copy()
    scale = max(0.4, min(width, height) / 900)
    thick = max(1, int(round(scale * 2)))
    for row in rows:
        x1, y1, x2, y2 = (int(round(v)) for v in row["box"])
        colour = SELECTED_COLOUR if row["selected"] else OTHER_COLOUR
        cv2.rectangle(framed, (x1, y1), (x2, y2), colour, thick)
        text = _label(row)
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
        ty = y1 - 4 if y1 - th - base - 4 >= 0 else min(height - base, y2 + th + 4)
        cv2.rectangle(framed, (x1, ty - th - 2), (x1 + tw + 4, ty + base), colour, -1)
        cv2.putText(framed, text, (x1 + 2, ty), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thick,
                    cv2.LINE_AA)
    sheet[:height, :width] = framed
    per_row = max(1, width // THUMB)
    for n, row in enumerate(rows):
        top = height + (n // per_row) * (THUMB + LABEL)
        left = (n % per_row) * THUMB
        sheet[top:top + THUMB, left:left + THUMB] = _crop(image, row["box"])
        colour = SELECTED_COLOUR if row["selected"] else OTHER_COLOUR
        cv2.rectangle(sheet, (left, top + THUMB), (left + THUMB - 1, top + THUMB + LABEL - 1), colour, -1)
        cv2.putText(sheet, _label(row), (left + 4, top + THUMB + LABEL - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.6,
                    (255, 255, 255), 1, cv2.LINE_AA)
    return sheet


def run(args: argparse.Namespace) -> int:
    from ffray.cli.preview import check_image_output, job_from_args
    from ffray.faces.frame import FrameSwap
    from ffray.faces.image import read_image, write_image
    from ffray.pipeline.one_frame import frame_reference, read_target_frame
    from ffray.pipeline.outputs import request_inputs

    options, config, execution, store = job_from_args(args)
    sources = args.sources or []
    if args.output:
        check_image_output(args.output, request_inputs(args.target, sources, options.reference_face_image),
                           args.overwrite)
    source_images = [read_image(uri) for uri in sources]
    frame = read_target_frame(args.target, args.frame, args.time, config.chunk_frames)

    job = FrameSwap(options, execution, store)
    source_faces = job.source_faces(source_images, sources)
    faces = job.analyse(frame.image)
    reference = frame_reference(job, frame, config.chunk_frames, faces, source_faces)
    selected = job.select(faces, reference, source_faces)
    if args.classify and hasattr(job.analyser, "classify"):
        from ffray.errors import ModelError
        from ffray.redact import redact

        try:  # display only: positions and selection are decided above
            job.analyser.classify(frame.image, faces)
        except ModelError as exc:  # informative columns: a missing classifier is a note, not a failure
            print(redact(f"ffray: note: no age/gender/race ({exc}); --no-classify skips them"), file=sys.stderr)
    rows = describe_faces(faces, options, selected, reference, job.analyser.face_distance, source_faces)

    if args.json:
        print(json.dumps(public(rows)))
    else:
        where = f"frame {frame.number} ({frame.seconds:.3f} s)" if frame.info is not None else "image"
        height, width = frame.image.shape[:2]
        print(f"{args.target}: {where}, {width}x{height}: {len(faces)} faces, order {options.face_selector_order}, "
              f"mode {options.face_selector_mode}")
        if options.face_selector_mode == "reference":
            print(_reference_line(options, frame, reference, job.analyser))
        print(table(rows, with_distance=reference is not None))
    if args.output:
        write_image(args.output, contact_sheet(frame.image, rows))
        print(f"ffray: wrote {args.output}", file=sys.stderr)
    return 0


def _reference_line(options, frame, reference, analyser) -> str:
    if options.reference_face_image:
        where = options.reference_face_image
    elif frame.info is None:
        where = "this image"
    else:
        where = f"frame {options.reference_frame_number}"
    if reference is None:
        return f"reference: no face in {where}: reference mode swaps nothing"
    scale = getattr(analyser, "distance_scale", None)
    meaning = f"; distance: {scale.meaning}" if scale is not None else ""
    return (f"reference: {where}, position {options.reference_face_position}; a face is swapped when its distance "
            f"is below {options.reference_distance:g}{meaning}")
