"""`ffray analyse VIDEO...|MANIFEST`: analyse template videos once, ahead of the jobs that will use them.

Exit codes (ffray/errors.py): 0 every video analysed (or already cached); 1 some video or chunk failed
(the others are cached); 2 bad input or options; 3 model unavailable.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ffray.errors import EXIT_FAILED, EXIT_OK, InputError

DESCRIPTION = """\
Detect, landmark and embed every face of every frame of the given target videos (or of the targets of
a batch MANIFEST) with the given face options, and keep the result in --work-dir/analysis. Every later
`ffray swap` or `ffray batch` job on these targets with the same analysis settings (pack, detector,
landmarker, recognizer and their options), whatever its sources, reuses it instead of running the
detector again. Videos already analysed are skipped.
"""


def register(subparsers) -> None:
    from ffray.cli.swap import _add_run_arguments

    parser = subparsers.add_parser("analyse", help="analyse template videos once for many later jobs",
                                   description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("targets", nargs="+", metavar="VIDEO|MANIFEST")
    _add_run_arguments(parser)
    parser.set_defaults(func=run_analyse_command)


def _targets(items: list[str]) -> list[str]:
    from ffray.cli.swap import manifest_rows

    targets: list[str] = []
    for item in items:
        if Path(item).suffix.lower() in (".csv", ".tsv", ".jsonl"):
            targets += [row.request.target for row in manifest_rows(item) if row.request is not None]
        else:
            targets.append(item)
    if not targets:
        raise InputError(f"{' '.join(items)}: no target videos")
    return list(dict.fromkeys(targets))


def run_analyse_command(args: argparse.Namespace) -> int:
    from ffray.cli.swap import resolve_options
    from ffray.pipeline.analyse import run_analyse
    from ffray.pipeline.progress import Progress

    options, config = resolve_options(args)
    progress = Progress(quiet=args.quiet, interval=args.progress_interval)
    result = run_analyse(_targets(args.targets), options, config, address=args.address, progress=progress,
                         quiet=args.quiet, local_cpus=args.local_cpus, local_gpus=args.local_gpus,
                         connect_timeout=args.connect_timeout)
    for failure in result.failures:
        print(f"ffray: error: {failure}", file=sys.stderr)
    if not args.quiet or result.failures:
        print(f"ffray: analysed {result.analysed} chunks of {result.videos} videos ({result.cached_before} already "
              f"cached, {result.faces} faces found) into {config.work_dir}/analysis", file=sys.stderr)
    return EXIT_FAILED if result.failures else EXIT_OK
