"""`ffray swap-image --source A [B ...] --target T --output O`: one still image, no Ray."""

from __future__ import annotations

import argparse
import json

from ffray.cli.models import add_store_arguments, store_from_args
from ffray.faces.options import add_face_arguments, face_options_from_args

DESCRIPTION = """\
Swap the identity of the source image(s) (the largest face of each) into the target image and write
the result; the output format follows its extension (.png, .jpg, .webp, ...). Paths may be local or
fsspec URLs (s3://...). With the default --pack builtin nothing is downloaded and everything runs on
CPU (dlib detection and identity, classical swap); --pack facefusion uses FaceFusion's ONNX models.
EXIF orientation of every input is respected. The output is written atomically.
"""


def register(subparsers) -> None:
    parser = subparsers.add_parser("swap-image", help="swap faces in one image (no Ray)", description=DESCRIPTION,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", "-s", dest="sources", nargs="+", required=True, metavar="IMG",
                        help="source image(s) with the identity to put in")
    parser.add_argument("--target", "-t", required=True, metavar="IMG", help="image whose faces are replaced")
    parser.add_argument("--output", "-o", required=True, metavar="IMG", help="output image (format by extension)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the output if it exists (default: refuse; never an input file)")
    g = parser.add_argument_group("models and execution (--pack facefusion)")
    g.add_argument("--execution-providers", nargs="+", default=["cpu"], choices=["tensorrt", "cuda", "cpu"])
    add_store_arguments(g, short_names=False)
    g.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    add_face_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ffray.faces.image import swap_image
    from ffray.pipeline.outputs import check_destination, check_overwrite, request_inputs
    from ffray.pipeline.preflight import check_model_names

    options = face_options_from_args(args)
    check_model_names(options)  # an unknown model name is a bad argument (exit 2), as in `ffray swap`
    # before any work: never write over an input, a folder, or (without --overwrite) an existing file
    check_destination(args.output, request_inputs(args.target, args.sources, options.reference_face_image))
    check_overwrite(args.output, args.overwrite)
    execution = store = None
    if options.pack != "builtin":
        from ffray.models.sessions import ExecutionOptions

        execution = ExecutionOptions(providers=tuple(args.execution_providers))
        store = store_from_args(args)
    summary = swap_image(args.sources, args.target, args.output, options, execution, store=store)
    if args.json:
        print(json.dumps(summary, sort_keys=True))
    return 0
