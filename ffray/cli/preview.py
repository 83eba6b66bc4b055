"""`ffray preview --source S... --target VIDEO|IMAGE --frame N --output out.png`: one frame swapped with a
job's exact options, in seconds, without Ray.

Exit codes (ffray/errors.py): 0 written; 2 bad input or options (a missing or unreadable file, a frame
number out of range, an existing output without --overwrite); 3 model unavailable.
"""

from __future__ import annotations

import argparse
import json
import sys
from fractions import Fraction

DESCRIPTION = """\
Swap one frame of the target video (or the target image) with exactly the options `ffray swap` would
use, and write it as an image (format by extension; .png keeps every pixel): the same decode, analysis,
selection (reference mode takes the reference face from the same frame or image as the job), swap and
enhancement as the job's stages, so the preview of frame N is bit for bit frame N of the job's video
before encoding, when run on the same execution providers. No Ray, no work dir. Rotated videos are shown
upright. Takes every face option and the --config file of `ffray swap`.
"""


def _seconds(text: str) -> Fraction:
    try:
        return Fraction(text)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"expected seconds such as 12.5, got {text!r}") from None


def add_frame_arguments(parser: argparse.ArgumentParser) -> None:
    """--frame N | --time SECONDS: which frame of a video target."""
    g = parser.add_mutually_exclusive_group()
    g.add_argument("--frame", type=int, default=None, metavar="N",
                   help="frame number (from 0, in presentation order: what --reference-frame-number counts) "
                        "of a video target (default: 0)")
    g.add_argument("--time", type=_seconds, default=None, metavar="SECONDS",
                   help="the frame shown at this time, in seconds from the video's first frame")


def add_job_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of the job being previewed: `ffray swap`'s face flags and --config file, and how to
    run the models here."""
    from ffray.cli.models import add_store_arguments
    from ffray.faces.options import add_face_arguments

    g = parser.add_argument_group("job and models (as for `ffray swap`)")
    g.add_argument("--config", metavar="FILE",
                   help="the job's TOML/YAML/JSON config file: its [face] options apply, flags override them")
    g.add_argument("--chunk-frames", type=int, metavar="N",
                   help="the job's chunk length: the frame is decoded from the chunk that holds it (default 48)")
    g.add_argument("--providers", nargs="+", choices=["tensorrt", "cuda", "cpu"],
                   help="ONNX Runtime providers in order (default: cpu)")
    g.add_argument("--intra-op-threads", type=int, metavar="N", help="ONNX Runtime CPU threads (default: ORT's)")
    add_store_arguments(g, short_names=False)
    add_face_arguments(parser)


def job_from_args(args: argparse.Namespace):
    """(FaceOptions, PipelineConfig, ExecutionOptions or None, ModelStore or None) as `ffray swap` resolves
    them: defaults < --config file < flags. Unknown model names are bad arguments (exit 2)."""
    from ffray.cli.swap import resolve_options
    from ffray.pipeline.preflight import check_model_names

    options, config = resolve_options(args)
    check_model_names(options)
    options.check_pack_supports_filters()
    if options.pack == "builtin":
        return options, config, None, None
    from ffray.models.sessions import ExecutionOptions
    from ffray.models.store import ModelStore

    execution = ExecutionOptions(providers=config.providers or ("cpu",), intra_op_threads=config.intra_op_threads)
    return options, config, execution, ModelStore(**config.store_settings())


def check_image_output(output: str, inputs: list[tuple[str, str]], overwrite: bool) -> None:
    """Before any work: never an input or a folder, not an existing file without --overwrite, and an
    extension an image can be written as."""
    import numpy as np

    from ffray.faces.image import encode_image
    from ffray.pipeline.outputs import check_destination, check_overwrite

    check_destination(output, inputs)
    check_overwrite(output, overwrite)
    encode_image(np.zeros((1, 1, 3), np.uint8), output)


def register(subparsers) -> None:
    parser = subparsers.add_parser("preview", help="one frame swapped with a job's options (no Ray)",
                                   description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", "-s", dest="sources", nargs="+", required=True, metavar="IMG",
                        help="source image(s) with the identity to put in")
    parser.add_argument("--target", "-t", required=True, metavar="VIDEO|IMAGE")
    parser.add_argument("--output", "-o", required=True, metavar="IMG", help="the swapped frame (.png, .jpg, ...)")
    add_frame_arguments(parser)
    parser.add_argument("--overwrite", action="store_true", help="replace the output if it exists (never an input)")
    parser.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    parser.add_argument("--quiet", "-q", action="store_true", help="no summary line on stderr")
    add_job_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ffray.faces.frame import FrameSwap, as_stage_faces
    from ffray.faces.image import read_image, write_image
    from ffray.pipeline.one_frame import frame_reference, read_target_frame
    from ffray.pipeline.outputs import request_inputs

    options, config, execution, store = job_from_args(args)
    check_image_output(args.output, request_inputs(args.target, args.sources, options.reference_face_image),
                       args.overwrite)
    source_images = [read_image(uri) for uri in args.sources]
    frame = read_target_frame(args.target, args.frame, args.time, config.chunk_frames)

    job = FrameSwap(options, execution, store)
    source_faces = job.source_faces(source_images, args.sources)
    faces = job.analyse(frame.image)
    reference = frame_reference(job, frame, config.chunk_frames, faces, source_faces)
    selected = job.select(faces, reference, source_faces)
    # the swapper and enhancer stages get the faces through the detector's packed columns
    result = job.swap(frame.image, as_stage_faces(selected), source_images, source_faces)
    write_image(args.output, result)

    summary = {"output": args.output, "target": args.target, "frame": frame.number, "time": frame.seconds,
               "faces": len(faces), "swapped_faces": len(selected), "model_hashes": job.model_hashes}
    if args.json:
        print(json.dumps(summary, sort_keys=True))
    if not args.quiet:
        where = f"frame {frame.number} of {args.target}" if frame.info is not None else args.target
        note = ""
        if options.face_selector_mode == "reference" and reference is None:
            note = "; no face in the reference frame or image, so reference mode swaps nothing"
        print(f"ffray: wrote {args.output} ({where}: {len(selected)} of {len(faces)} faces swapped{note})",
              file=sys.stderr)
    return 0
