"""`ffray probe FILE [--json] [--chunk-frames N]`: what ffray sees in a video, and how it would cut it."""

from __future__ import annotations

import argparse
import json


def register(subparsers) -> None:
    parser = subparsers.add_parser("probe", help="show a video's frames, timing, keyframes, audio; plan chunks",
                                   description=__doc__)
    parser.add_argument("file", help="local path or fsspec URL (s3://bucket/key.mp4, ...)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a summary")
    parser.add_argument("--chunk-frames", type=int, metavar="N", help="also plan chunks of about N frames")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ffray.errors import InputError
    from ffray.media import plan_chunks, probe

    if args.chunk_frames is not None and args.chunk_frames < 1:
        raise InputError(f"--chunk-frames: must be a positive integer, got {args.chunk_frames}")
    info = probe(args.file)
    data = info.to_json()
    chunks = plan_chunks(info, args.chunk_frames) if args.chunk_frames else None
    if chunks is not None:
        data["chunks"] = [{"id": c.id, "start": c.start, "end": c.end} for c in chunks]
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    audio = ", ".join(f"#{a.index} {a.codec} {a.channels}ch {a.sample_rate}Hz" for a in info.audio) or "none"
    print(f"{info.uri}")
    print(f"  video   {info.codec} {info.width}x{info.height} (coded {info.coded_width}x{info.coded_height}, "
          f"rotation {info.rotation}) {info.pix_fmt} {info.bit_depth}-bit")
    print(f"  frames  {info.frames} in {info.duration:.3f}s at {data['fps']} fps"
          f"{' (variable)' if info.vfr else ''}, {len(info.keyframes)} keyframes")
    print(f"  audio   {audio}")
    print(f"  colour  {', '.join(f'{k} {v}' for k, v in info.color.items())}")
    if chunks is not None:
        print(f"  chunks  {len(chunks)}: " + ", ".join(f"[{c.start},{c.end})" for c in chunks))
    return 0
