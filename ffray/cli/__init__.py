"""`ffray` command line. Each subcommand lives in its own module with `register(subparsers)`.

Heavy imports (Ray, ONNX Runtime, PyAV) happen inside the command functions so `ffray --help`
and `ffray probe` stay fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from ffray import __version__
from ffray.errors import EXIT_CODES, EXIT_INTERRUPTED, FfrayError
from ffray.redact import RedactingFilter, redact

# module name under ffray.cli, in help order
COMMAND_MODULES = ("probe", "models", "faces", "preview", "swap_image", "swap", "analyse", "label")


def build_parser() -> argparse.ArgumentParser:
    epilog = "exit codes:\n" + "\n".join(f"  {code:<4} {text}" for code, text in EXIT_CODES.items())
    parser = argparse.ArgumentParser(
        prog="ffray",
        description="FaceFusion-compatible face swapping for whole video libraries, on Ray.",
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"ffray {__version__}")
    parser.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"ffray.cli.{name}")
        except ModuleNotFoundError as exc:  # a command whose module is not written yet
            if exc.name != f"ffray.cli.{name}":
                raise
            continue
        module.register(sub)
    return parser


def error(message: str) -> None:
    print(f"ffray: error: {redact(message)}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:  # on handlers: they see the records of every logger
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
    try:
        return int(args.func(args) or 0)
    except FfrayError as exc:
        error(str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        error("interrupted; rerun the same command to resume")
        return EXIT_INTERRUPTED


def cluster_main(command: str, argv: list[str]) -> int:
    """`ray job submit` entrypoints: run `command` on the cluster the job runs in (`--address auto`
    unless the caller chose an address)."""
    if "--address" not in argv:
        argv = [*argv, "--address", "auto"]
    return main([command, *argv])


if __name__ == "__main__":
    sys.exit(main())
