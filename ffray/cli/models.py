"""`ffray models list|pull|verify`: what the registry knows, what is cached, fetch and re-check files."""

from __future__ import annotations

import argparse
import json
import sys

from ffray.errors import ModelError
from ffray.redact import redact

DESCRIPTION = """\
Models are FaceFusion's ONNX files, kept in a cache folder (default ~/.cache/ffray/models, or
FFRAY_MODEL_CACHE) with FaceFusion's crc32 .hash files beside them. Offline, supply a model by copying
NAME.onnx and NAME.hash into the cache (a FaceFusion .assets/models folder can be copied as it is), or
point --model-source / FFRAY_MODEL_SOURCE at a folder, http(s) mirror or s3:// bucket holding them
(as <source>/<file> or <source>/<release>/<file>); for s3 set FFRAY_S3_ENDPOINT_URL for a non-AWS endpoint.
"""


def register(subparsers) -> None:
    parser = subparsers.add_parser("models", help="list, pull and verify model files", description=DESCRIPTION,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="models_command", metavar="ACTION")
    sub.required = True
    for action, help_text in (
        ("list", "registry entries with licence and cache status"),
        ("pull", "fetch and verify models (all when no NAMES; a corrupt cached file is fetched again)"),
        ("verify", "re-hash cached models against their hashes (all cached when no NAMES)"),
    ):
        p = sub.add_parser(action, help=help_text)
        p.add_argument("names", nargs="*", metavar="NAMES", help="model names, or NAME=PATH_OR_URL")
        add_store_arguments(p)
        p.add_argument("--json", action="store_true", help="machine-readable output")
        if action == "list":
            p.add_argument("--kind", help="only models of this kind (detector, swapper, enhancer, ...)")
        if action == "pull":
            p.add_argument("--force", action="store_true", help="fetch again even if cached and verified")
        p.set_defaults(func=run)


def add_store_arguments(parser: argparse.ArgumentParser, short_names: bool = True) -> None:
    """The model-store options, shared with every command that loads models. Commands whose
    `--source` means source images pass short_names=False and keep only the --model-* spellings."""
    cache = ("--cache-dir", "--model-cache") if short_names else ("--model-cache",)
    source = ("--source", "--model-source") if short_names else ("--model-source",)
    parser.add_argument(*cache, dest="cache_dir", default=None,
                        help="model cache folder (default ~/.cache/ffray/models, env FFRAY_MODEL_CACHE)")
    parser.add_argument(*source, dest="source", default=None,
                        help="where to fetch models: https://mirror/base, s3://bucket/prefix or a folder "
                             "(env FFRAY_MODEL_SOURCE; default FaceFusion's GitHub release, then Hugging Face)")
    parser.add_argument("--commercial-only", action="store_true",
                        help="refuse models whose licence does not allow commercial use")


def store_from_args(args: argparse.Namespace):
    from ffray.models.store import ModelStore

    return ModelStore(cache_dir=args.cache_dir, source=args.source, commercial_only=args.commercial_only)


def run(args: argparse.Namespace) -> int:
    store = store_from_args(args)
    return {"list": _list, "pull": _pull, "verify": _verify}[args.models_command](store, args)


def _names(args: argparse.Namespace, default: list[str]) -> list[str]:
    from ffray.models.registry import get_spec
    from ffray.models.store import parse_model_ref

    names = args.names or default
    for ref in names:
        get_spec(parse_model_ref(ref)[0])  # unknown names fail before any work
    return names


def _list(store, args) -> int:
    from ffray.models.registry import MODELS, get_spec

    names = _names(args, list(MODELS))
    rows = []
    for name in names:
        spec = get_spec(name)
        if args.kind and spec.kind != args.kind:
            continue
        if args.commercial_only and not spec.commercial:
            continue
        rows.append({
            "name": spec.name, "kind": spec.kind, "type": spec.type, "file": spec.file_name,
            "release": spec.release, "license": spec.license, "commercial": spec.commercial,
            "status": store.status(spec.name), "path": str(store.path_for(spec)),
            "crc32": spec.crc32, "sha256": spec.sha256 or store.recorded_sha256(spec.name),
        })
    if args.json:
        json.dump(rows, sys.stdout, indent=1)
        print()
        return 0
    _table(rows, ("name", "kind", "license", "commercial", "status"))
    print(f"cache: {store.cache_dir}")
    return 0


def _pull(store, args) -> int:
    from ffray.models.registry import MODELS, get_spec, required_models
    from ffray.models.store import parse_model_ref

    if args.names:
        refs = []
        for ref in _names(args, []):
            name, location = parse_model_ref(ref)
            refs += [ref] if location else [r for r in required_models(name) if r not in refs]
    else:  # everything, like FaceFusion's force-download; --commercial-only skips what it would refuse
        refs = [n for n in MODELS if not args.commercial_only or get_spec(n).commercial]
    return _each(refs, lambda ref: store.pull(ref, force=args.force), "verified", "pull", args)


def _verify(store, args) -> int:
    from ffray.models.registry import MODELS

    cached = [n for n in MODELS if store.status(n) not in ("missing", "partial")]
    refs = _names(args, cached)
    if not refs and not args.json:
        print(f"no models cached in {store.cache_dir}")
        return 0
    return _each(refs, store.verify, "ok", "verification", args)


def _each(refs: list[str], action, done: str, what: str, args: argparse.Namespace) -> int:
    """Run `action` on every ref, report each (text or --json), fail at the end if any failed."""
    rows, failures = [], []
    for ref in refs:
        try:
            resolved = action(ref)
        except ModelError as exc:
            failures.append(str(exc))
            rows.append({"name": ref, "status": "failed", "error": str(exc)})
            if not args.json and len(refs) > 1:
                print(redact(f"{ref}: FAILED: {exc}"), file=sys.stderr)
            continue
        rows.append({"name": ref, "status": "verified", "path": str(resolved.path), "sha256": resolved.sha256})
        if not args.json:
            print(f"{ref}: {done} {resolved.path} sha256 {resolved.sha256}")
    if args.json:
        json.dump(rows, sys.stdout, indent=1)
        print()
    if failures:
        raise ModelError(failures[0] if len(failures) == 1 else f"{len(failures)} models failed {what}; first: {failures[0]}")
    return 0


def _table(rows: list[dict], columns: tuple[str, ...]) -> None:
    def cell(value) -> str:
        return ("yes" if value else "no") if isinstance(value, bool) else str(value)

    cells = [[cell(row[c]) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    print("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for r in cells:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())
