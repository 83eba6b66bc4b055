"""`ffray label FILE [--json] [--trust CA.pem]`: is this file labelled as synthetic, by what, and does
its C2PA signature hold? Exit 0 when labelled and nothing fails; 4 when unlabelled or a check fails."""

from __future__ import annotations

import argparse
import json


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "label", help="read and verify a file's synthetic-media label (tags, sidecar, C2PA)", description=__doc__)
    parser.add_argument("file", help="local path or fsspec URL of a video")
    parser.add_argument("--json", action="store_true", help="print the full report as JSON")
    parser.add_argument("--trust", metavar="PEM",
                        help="CA certificates (PEM) the C2PA signer must chain to; without it trust is not checked")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ffray.cli import error
    from ffray.errors import EXIT_LABEL, EXIT_OK
    from ffray.label import read_trust_anchors, verify_label

    anchors = read_trust_anchors(args.trust) if args.trust else None
    report = verify_label(args.file, trust_anchors_pem=anchors)
    if args.json:
        print(json.dumps(report.to_json(), indent=2, sort_keys=True))
    else:
        _print_summary(report, trust_given=bool(anchors))
    if report.ok:
        return EXIT_OK
    for problem in report.problems:
        error(f"{args.file}: {problem}")
    return EXIT_LABEL


def _print_summary(report, trust_given: bool) -> None:
    if report.synthetic:
        synthetic = "yes"
    elif report.c2pa is not None and report.c2pa.synthetic:
        synthetic = "claimed only by a C2PA manifest that does not verify"
    else:
        synthetic = "no label found"
    rows = [("synthetic", synthetic)]
    if report.tool:
        rows.append(("tool", f"{report.tool} {report.version or '?'}"))
    for number, (name, sha) in enumerate(sorted(report.models.items())):
        rows.append(("models" if number == 0 else "", f"{name} sha256:{sha}"))
    container = report.container
    rows.append(("tags", ", ".join(container["tags"]) if container else "none"))
    if report.sidecar is None:
        rows.append(("sidecar", "none"))
    else:
        sidecar = report.sidecar
        match = "matches this file" if report.sidecar_matches else "DOES NOT MATCH this file"
        rows.append(("sidecar", f"{report.sidecar_uri}: job {sidecar.get('job_id', '?')}, written "
                                f"{sidecar.get('written_utc', '?')}, {match}"))
    rows.append(("c2pa", _c2pa_line(report, trust_given)))
    rows.append(("result", "OK" if report.ok else "FAILED"))
    print(report.path)
    for name, value in rows:
        print(f"  {name:<10} {value}")


def _c2pa_line(report, trust_given: bool) -> str:
    status = report.c2pa
    if status is None:
        return report.c2pa_note or "none"
    if status.error:
        return f"INVALID: {status.error}"
    signer = f"{status.signer!r} (issuer {status.issuer!r}, {(status.alg or '?').upper()})"
    if not status.valid:
        return f"INVALID (signed by {signer}): " + "; ".join(status.failures)
    if status.trusted:
        trust = "signer trusted"
    elif status.trusted is False:
        trust = "signer NOT trusted by --trust"
    else:
        trust = "signer trust not checked (give --trust CA.pem)"
    actions = ", ".join(status.actions)
    return f"valid signature by {signer}; {trust}; actions {actions}"
