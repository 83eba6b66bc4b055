"""`ffray swap`, `ffray batch`, `ffray demo`: videos through the distributed pipeline on Ray.

Exit codes (ffray/errors.py): 0 all videos done; 1 processing failed (batch: some rows failed, the others
completed); 2 bad input or options; 3 model unavailable; 130 interrupted (rerun the same command to
resume: finished chunks are kept in the work dir).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from ffray.errors import EXIT_FAILED, EXIT_OK, FfrayError, InputError
from ffray.faces.options import FaceOptions, add_face_arguments, face_options_from_args
from ffray.media.trim import add_trim_arguments, check_trim, pop_manifest_trim, row_trim
from ffray.redact import redact

SWAP_DESCRIPTION = """\
Swap the identity of the source image(s) into every selected face of the target video, as a Ray Data
job: chunks of frames stream through separately scaled detector, swapper and (optional) enhancer actor
pools and a segment writer; the output is remuxed with the source's audio as soon as its last chunk is
done. Finished chunks are kept in --work-dir (a path, or an fsspec URL such as s3://bucket/prefix) per
video and settings: rerunning the same command resumes an interrupted job, and a later job that contains
a video already done with the same settings reuses it. The output is never one of the inputs; an
existing output is refused unless it is what this same job wrote before (reported as already done) or
--overwrite is given.
"""

BATCH_DESCRIPTION = """\
Run many videos as one job. MANIFEST is CSV (header: source,target,output[,face option columns]) or
JSONL (one object per line: {"source": IMG or [IMG, ...], "target": VIDEO, "output": OUT,
"options": {face options}}). Several source images in a CSV cell are separated by ';'. Relative paths are
relative to the manifest. The options may include trim_frame_start and trim_frame_end, the row's frame
range (--trim-frame-start/--trim-frame-end apply to the rows that give none). Every output must lie
below --output-root (default: the manifest's folder) and be none of the row's inputs; an existing output is refused unless it is what this same job wrote before
(already done) or --overwrite is given. A row that fails (bad line, refused output, bad input) is listed
at the end with its reason; the others complete. Exit code 0 only if every row succeeded.
"""

DEMO_DESCRIPTION = """\
Offline demo with the builtin pack: swaps --source into --target, or, without them, Grace Hopper's
portrait (US Navy, public domain, from matplotlib's sample data) into a short clip made from skimage's
astronaut photo (NASA, public domain).
Runs the whole distributed pipeline on a local Ray and prints where the output is.
"""


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    from ffray.pipeline.config import add_pipeline_arguments

    g = parser.add_argument_group("cluster and output")
    g.add_argument("--address", default=None,
                   help="Ray cluster to join: 'auto' or HOST:PORT / ray://...; default: start a local Ray")
    g.add_argument("--connect-timeout", type=float, default=60.0, metavar="SECONDS",
                   help="give up joining --address after this long, exit 2 (default: 60)")
    g.add_argument("--num-cpus", type=float, default=None, dest="local_cpus",
                   help="local Ray only: logical CPUs to advertise (default: enough for the pools)")
    g.add_argument("--num-gpus", type=float, default=None, dest="local_gpus",
                   help="local Ray only: GPUs to advertise (default: detected)")
    g.add_argument("--report", default=None, metavar="FILE",
                   help="also write the run report JSON here (always in <work-dir>/jobs/<job>/runs/<run>/report.json, "
                        "and the latest run's in <work-dir>/jobs/<job>/report.json)")
    g.add_argument("--quiet", "-q", action="store_true", help="no progress output (for logs)")
    g.add_argument("--progress-interval", type=float, default=None, metavar="S",
                   help="seconds between progress lines when stderr is not a terminal (default 5)")
    add_pipeline_arguments(parser)
    add_face_arguments(parser)


def register(subparsers) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    swap = subparsers.add_parser("swap", help="swap faces in a video on Ray", description=SWAP_DESCRIPTION,
                                 formatter_class=fmt)
    swap.add_argument("--source", "-s", dest="sources", nargs="+", required=True, metavar="IMG")
    swap.add_argument("--target", "-t", required=True, metavar="VIDEO")
    swap.add_argument("--output", "-o", required=True, metavar="OUT")
    _add_run_arguments(swap)
    add_trim_arguments(swap)
    swap.set_defaults(func=run_swap_command)

    batch = subparsers.add_parser("batch", help="swap faces in the videos of a CSV/JSONL manifest",
                                  description=BATCH_DESCRIPTION, formatter_class=fmt)
    batch.add_argument("manifest", metavar="MANIFEST")
    batch.add_argument("--output-root", metavar="DIR|URL", default=None,
                       help="every row's output must resolve below this folder (or URL prefix); a row whose "
                       "output is elsewhere fails alone. Default: the manifest's folder")
    _add_run_arguments(batch)
    add_trim_arguments(batch)  # every row's, unless its own trim_frame_start/trim_frame_end say otherwise
    batch.set_defaults(func=run_batch_command)

    demo = subparsers.add_parser("demo", help="offline demo on a local Ray (builtin pack)",
                                 description=DEMO_DESCRIPTION, formatter_class=fmt)
    demo.add_argument("--source", "-s", dest="sources", nargs="+", default=None, metavar="IMG")
    demo.add_argument("--target", "-t", default=None, metavar="VIDEO")
    demo.add_argument("--output", "-o", default=None, metavar="OUT")
    _add_run_arguments(demo)
    demo.set_defaults(func=run_demo_command)


# --- options ----------------------------------------------------------------------------------------


def resolve_options(args: argparse.Namespace):
    """(FaceOptions, PipelineConfig): defaults < --config file < flags given on the command line."""
    from ffray.pipeline.config import load_config_file, pipeline_config_from_args

    file_values = load_config_file(args.config) if getattr(args, "config", None) else {"pipeline": {}, "face": {}}
    cli = face_options_from_args(args)
    defaults = FaceOptions()
    merged = {**defaults.to_dict(), **file_values["face"]}
    # a face flag counts as given when it differs from the built-in default
    for f in fields(FaceOptions):
        value = getattr(cli, f.name)
        if value != getattr(defaults, f.name):
            merged[f.name] = value
    try:
        options = FaceOptions.from_dict(merged)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{args.config}: {exc}") from exc
    return options, pipeline_config_from_args(args, file_values["pipeline"])


def _row_options(base: FaceOptions, extra: dict[str, Any], where: str) -> FaceOptions:
    if not extra:
        return base
    known = {f.name: f for f in fields(FaceOptions)}
    values = base.to_dict()
    for key, value in extra.items():
        name = key.replace("-", "_")
        if name not in known:
            raise InputError(f"{where}: unknown face option {key!r}")
        if value in ("", None):
            continue
        default = getattr(base, name)
        if isinstance(value, str) and not isinstance(default, str):
            value = _parse_scalar(value, default, where, key)
        values[name] = value
    try:
        return FaceOptions.from_dict(values)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{where}: {exc}") from exc


def _parse_scalar(text: str, like: Any, where: str, key: str) -> Any:
    try:
        if isinstance(like, bool):
            return text.strip().lower() in ("1", "true", "yes")
        if isinstance(like, int):
            return int(text)
        if isinstance(like, float):
            return float(text)
        if isinstance(like, tuple):
            items = [t for t in text.replace(";", " ").replace(",", " ").split() if t]
            return tuple(type(like[0])(t) if like else t for t in items)
    except ValueError:
        raise InputError(f"{where}: bad value {text!r} for {key}") from None
    return text


# --- running ----------------------------------------------------------------------------------------


def _run(requests, options, config, args, label_failures: bool):
    from ffray.pipeline.driver import run_swap
    from ffray.pipeline.progress import Progress

    progress = Progress(quiet=args.quiet, interval=args.progress_interval)
    return run_swap(requests, options, config, address=args.address, progress=progress, quiet=args.quiet,
                    report_path=args.report, local_cpus=args.local_cpus, local_gpus=args.local_gpus,
                    connect_timeout=args.connect_timeout)


def run_swap_command(args: argparse.Namespace) -> int:
    from ffray.pipeline.driver import VideoRequest

    trim_start, trim_end = check_trim(args.trim_frame_start, args.trim_frame_end)  # the rest once probed
    options, config = resolve_options(args)
    request = VideoRequest(target=args.target, output=args.output, sources=tuple(args.sources),
                           trim_start=trim_start, trim_end=trim_end)
    _check_destination(request, options)
    result = _run([request], options, config, args, label_failures=False)
    video = result.videos[0]
    if video.status != "done":
        raise video.exception()
    if not args.quiet:
        if video.output_info.get("already_done"):
            print(f"ffray: {video.output}: already done (identical to what this job wrote before; "
                  f"report {result.report_path})", file=sys.stderr)
        else:
            print(f"ffray: wrote {video.output} ({video.frames} frames, {video.faces} faces; "
                  f"report {result.report_path})", file=sys.stderr)
    return EXIT_OK


def _check_destination(request, options: FaceOptions, *more: tuple[str, str]) -> None:
    """Before any work: the output is none of the inputs and not a folder (ffray.pipeline.outputs)."""
    from ffray.pipeline.outputs import check_destination, request_inputs

    check_destination(request.output,
                      [*request_inputs(request.target, request.sources, options.reference_face_image), *more])


@dataclass(frozen=True)
class ManifestRow:
    where: str  # "line N" (JSONL) or "row N (line M)" (CSV: Nth data row, starting on file line M)
    request: Any = None  # VideoRequest, or None when the row itself is bad
    options: dict[str, Any] | None = None  # per-row face options
    error: str | None = None


def read_manifest(path: str) -> list[tuple[Any, dict[str, Any] | None, str | None]]:
    """[(VideoRequest or None, per-row face options, error)] in manifest order."""
    return [(row.request, row.options, row.error) for row in manifest_rows(path)]


def manifest_rows(path: str) -> list[ManifestRow]:
    """The rows of a CSV/TSV or JSONL manifest, in order. A bad row is returned with its error (it fails
    alone); only a manifest that cannot be read as a whole raises InputError."""
    from ffray.pipeline.driver import VideoRequest

    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read manifest ({exc.strerror or exc})") from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise InputError(f"{path}: not UTF-8 text: byte 0x{data[exc.start]:02x} at offset {exc.start} "
                         f"(line {line})") from None
    text = text.removeprefix("\ufeff")  # a BOM would otherwise become part of the first column's name
    base = p.parent

    def local(value: str) -> str:
        if "://" in value or os.path.isabs(value):
            return value
        return str(base / value)

    raw: list[tuple[str, dict[str, Any] | None, str | None]] = []  # (where, item, error)
    if p.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except ValueError as exc:
                raw.append((f"line {n}", None, f"not JSON ({exc})"))
                continue
            if not isinstance(item, dict):
                raw.append((f"line {n}", None, f"expected a JSON object, got {type(item).__name__}"))
                continue
            raw.append((f"line {n}", item, None))
    elif p.suffix.lower() in (".csv", ".tsv"):
        reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t" if p.suffix.lower() == ".tsv" else ",")
        try:
            header = next(reader, [])
            missing = {"source", "target", "output"} - set(header)
            if missing:
                raise InputError(f"{path}: manifest header lacks column(s) {', '.join(sorted(missing))}")
            n = 0
            while True:
                first_line = reader.line_num + 1  # a quoted cell may span lines: label a row by its first
                values = next(reader, None)
                if values is None:
                    break
                if not values:  # blank line
                    continue
                n += 1
                item = {h: values[j] if j < len(values) else None for j, h in enumerate(header)}
                sources = [s for s in (item.get("source") or "").split(";") if s.strip()]
                opts = {k: v for k, v in item.items() if k not in ("source", "target", "output") and v not in ("", None)}
                raw.append((f"row {n} (line {first_line})", {"source": sources, "target": item.get("target"),
                                                             "output": item.get("output"), "options": opts}, None))
        except csv.Error as exc:
            raise InputError(f"{path}: line {reader.line_num}: not valid CSV ({exc})") from None
    else:
        raise InputError(f"{path}: manifest must be .csv, .tsv or .jsonl")
    if not raw:
        raise InputError(f"{path}: manifest has no rows")
    rows = []
    for where, item, error in raw:
        if item is None:
            rows.append(ManifestRow(where, error=error))
            continue
        sources = item.get("source") or item.get("sources") or []
        if isinstance(sources, str):
            sources = [sources]
        target, output, opts = item.get("target"), item.get("output"), item.get("options") or {}
        if not sources or not target or not output:
            rows.append(ManifestRow(where, error="needs source, target and output"))
            continue
        if not (isinstance(sources, list) and all(isinstance(x, str) for x in sources)
                and isinstance(target, str) and isinstance(output, str) and isinstance(opts, dict)):
            rows.append(ManifestRow(where, error="source must be a path or a list of paths, target and output "
                                                 "paths, options an object"))
            continue
        opts = dict(opts)
        try:  # trim_frame_start / trim_frame_end: the row's frame range, not face options
            trim_start, trim_end = pop_manifest_trim(opts)
        except InputError as exc:
            rows.append(ManifestRow(where, error=str(exc)))
            continue
        request = VideoRequest(target=local(target), output=local(output),
                               sources=tuple(local(x.strip()) for x in sources),
                               trim_start=trim_start, trim_end=trim_end)
        rows.append(ManifestRow(where, request, opts))
    return rows


def check_batch_outputs(rows: list[ManifestRow], manifest: str, output_root: str) -> dict[int, str]:
    """Row index -> why its output is refused, before any work: the row would write over an input of its
    own (or the manifest), into a folder, outside --output-root, or where an earlier row writes."""
    from ffray.pipeline.outputs import check_inside_root, output_id

    refused: dict[int, str] = {}
    claimed: dict[str, str] = {}  # output identity -> the row that writes it
    for i, row in enumerate(rows):
        if row.request is None:
            continue
        request = row.request
        try:
            check_inside_root(request.output, output_root)
            _check_destination(request, FaceOptions(), ("the manifest", manifest))
        except InputError as exc:
            refused[i] = str(exc)
            continue
        ident = output_id(request.output)
        if ident in claimed:
            refused[i] = f"{request.output}: {claimed[ident]} writes this output too"
            continue
        claimed[ident] = row.where
    return refused


def run_batch_command(args: argparse.Namespace) -> int:
    default_trim = check_trim(args.trim_frame_start, args.trim_frame_end)
    options, config = resolve_options(args)
    manifest = manifest_rows(args.manifest)
    rows = [(row.request, row.options, row.error) for row in manifest]
    output_root = args.output_root or str(Path(args.manifest).absolute().parent)
    refused = check_batch_outputs(manifest, args.manifest, output_root)
    # rows with the same face options share one job (one set of actor pools); others run one after another
    groups: dict[str, list[tuple[int, Any]]] = {}
    group_options: dict[str, FaceOptions] = {}
    failures: list[tuple[int, str, str]] = []
    for i, (request, extra, error) in enumerate(rows):
        if error or i in refused:
            failures.append((i, "", error or refused[i]))
            continue
        try:
            opts = _row_options(options, extra or {}, args.manifest)
            request = row_trim(request, *default_trim)
            if opts.reference_face_image:
                _check_destination(request, opts)
        except InputError as exc:
            failures.append((i, request.target, str(exc)))
            continue
        key = json.dumps(opts.to_dict(), sort_keys=True, default=str)
        groups.setdefault(key, []).append((i, request))
        group_options[key] = opts
    succeeded = 0
    reports = []
    if groups:  # job-wide: an unwritable work dir stops the whole batch with one line, not every row
        from ffray.pipeline.preflight import check_work_dir

        check_work_dir(config.work_dir)
    for key, members in groups.items():
        # one group's job failing (a bad per-row model, or anything unexpected) fails its rows only
        try:
            result = _run([r for _, r in members], group_options[key], config, args, label_failures=True)
        except FfrayError as exc:
            reports.extend([exc.report_path] if getattr(exc, "report_path", "") else [])
            failures += [(i, request.target, str(exc)) for i, request in members]
            continue
        except Exception as exc:
            import logging

            logging.getLogger(__name__).debug("batch group failed", exc_info=True)  # --log-level debug
            reason = f"processing failed: {type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"
            failures += [(i, request.target, reason) for i, request in members]
            continue
        reports.extend([result.report_path] if result.report_path else [])
        for (i, request), video in zip(members, result.videos, strict=True):
            if video.status == "done":
                succeeded += 1
            else:
                failures.append((i, request.target, video.error))
    total = len(rows)
    out = sys.stderr
    if not args.quiet or failures:
        print(f"ffray batch: {succeeded} of {total} succeeded; report(s): {', '.join(reports) or '-'}", file=out)
    for i, target, reason in sorted(failures):
        # most reasons already start with the file they are about: name the target only when not
        about = f" {target}:" if target and not reason.startswith(target) else ""
        print(redact(f"FAILED {manifest[i].where}:{about} {reason}"), file=out)
    return EXIT_OK if not failures else EXIT_FAILED


def make_demo_inputs(folder: Path) -> tuple[str, str]:
    """(target clip, source image), both public domain: a clip of skimage's astronaut photo (NASA, Eileen
    Collins), slowly zoomed and panned over 2 s at 24 fps with a quiet tone as audio, and matplotlib's
    sample portrait of Grace Hopper (US Navy) as the identity to put in."""
    import matplotlib.cbook
    from skimage import data

    folder.mkdir(parents=True, exist_ok=True)
    source = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    target = folder / "astronaut-clip.mp4"
    if not target.exists():
        _write_demo_clip(data.astronaut()[:, :, ::-1], target)  # RGB -> BGR
    return str(target), str(source)


def _write_demo_clip(photo, path: Path, frames: int = 48, fps: int = 24, size: int = 320) -> None:
    import av
    import cv2
    import numpy as np

    tmp = path.with_name(path.name + ".part.mp4")
    with av.open(str(tmp), "w") as out:
        video = out.add_stream("libx264", rate=fps, options={"crf": "18", "preset": "veryfast"})
        video.width = video.height = size
        video.pix_fmt = "yuv420p"
        audio = out.add_stream("aac", rate=44100)
        for i in range(frames):
            t = i / max(frames - 1, 1)
            crop = int(440 - 80 * t)  # slow zoom in, drifting right
            x0, y0 = int(20 + 30 * t), 10
            frame = cv2.resize(photo[y0:y0 + crop, x0:x0 + crop], (size, size), interpolation=cv2.INTER_AREA)
            for packet in video.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="bgr24")):
                out.mux(packet)
        for packet in video.encode():
            out.mux(packet)
        samples = 44100 * frames // fps
        tone = (0.1 * np.sin(2 * np.pi * 440 * np.arange(samples) / 44100)).astype(np.float32)
        for start in range(0, samples, 1024):
            block = tone[start:start + 1024][None]
            aframe = av.AudioFrame.from_ndarray(block, format="flt", layout="mono")
            aframe.sample_rate = 44100
            aframe.pts = start
            for packet in audio.encode(aframe):
                out.mux(packet)
        for packet in audio.encode():
            out.mux(packet)
    os.replace(tmp, path)


def run_demo_command(args: argparse.Namespace) -> int:
    from ffray.pipeline.driver import VideoRequest

    if args.pack != "builtin":
        raise InputError("--pack: the demo runs offline with the builtin pack only")
    from ffray.pipeline.storage import is_url

    options, config = resolve_options(args)
    if is_url(config.work_dir) and not (args.target and args.output):
        raise InputError(f"--work-dir {config.work_dir}: the demo makes its clip and output in a local folder; "
                         "give a local --work-dir, or --target and --output")
    work = Path(config.work_dir).expanduser().absolute()
    if args.target:
        target = args.target
        if not args.sources:
            raise InputError("--source: give a source image with --target")
        sources = tuple(args.sources)
    else:
        target, source = make_demo_inputs(work / "demo-inputs")
        sources = tuple(args.sources or (source,))
    output = args.output or str(work / "demo-output" / (Path(target).stem + "-swapped.mp4"))
    if not is_url(output):
        Path(output).parent.mkdir(parents=True, exist_ok=True)
    request = VideoRequest(target=target, output=output, sources=sources)
    _check_destination(request, options)
    result = _run([request], options, config, args, label_failures=False)
    video = result.videos[0]
    if video.status != "done":
        raise video.exception()
    print(video.output)
    if not args.quiet:
        print(f"ffray demo: {video.frames} frames, {video.faces} faces swapped; report {result.report_path}",
              file=sys.stderr)
    return EXIT_OK
