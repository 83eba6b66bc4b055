"""The QC page: `report.html` beside a run's `report.json`, one static file for a person to look at.

It opens offline and fetches nothing: CSS inline, charts as inline SVG drawn here, frames as data:
URIs (JPEG), and a Content-Security-Policy that forbids every fetch and every script, so even a text
that slipped past escaping could not run or load anything. Everything from the report (paths, URLs,
error texts) is HTML-escaped.

Per video: a before/after strip (source frame beside output frame) of a few frames with faces, faces
per chunk, failures with their reasons; for the run: per-stage throughput and busy time, totals.
Thumbnails are decoded after the run from the source and the output (frame-exact, ffray.media); the
page is a by-product, so any problem there is a note on the page, never a failed run.
"""

from __future__ import annotations

import base64
import bisect
import dataclasses
import html
import logging
import time
from typing import Any

from ffray.redact import redact

log = logging.getLogger(__name__)

THUMB_WIDTH = 320  # px; thumbnails are downscaled to this width (never up)
JPEG_QUALITY = 80
MAX_BARS = 240  # faces-per-chunk chart: more chunks than this are merged into equal bins
STAGE_ORDER = ("read", "analysis", "detector", "swapper", "enhancer", "writer")  # as report.STAGE_ORDER
PLAN_FRAMES = 32  # chunk length used only to find a frame's seek keyframe (short: little lead-in)

# no fetch, no script, no frame: data: images and the inline <style> only
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"


# --- choosing and decoding frames ------------------------------------------------------------------


def chunk_faces_from_ledger(report: dict, video: dict) -> list[dict]:
    """Per-chunk face counts of a video from its chunk records in the work dir (ffray.pipeline.ledger),
    for reports that do not carry `chunk_faces`. The job dir is `<work root>/jobs/<job id>`."""
    from ffray.pipeline.ledger import VideoLedger
    from ffray.pipeline.storage import join

    job_dir, job_id, key = str(report.get("job_dir") or ""), str(report.get("job_id") or ""), video.get("video_key")
    suffix = f"/jobs/{job_id}"
    if not (key and job_id and job_dir.endswith(suffix)):
        return []
    ledger = VideoLedger(join(job_dir[: -len(suffix)], "videos", str(key)))
    return sorted(({"index": r.chunk_index, "start": r.start, "end": r.end, "faces": r.faces}
                   for r in ledger.records.values()), key=lambda c: c["index"])


def chunk_faces(report: dict, video: dict) -> list[dict]:
    """`[{index, start, end, faces}]` from the report, else from the work dir's ledger, else []."""
    chunks = video.get("chunk_faces")
    if isinstance(chunks, list):
        return chunks
    if video.get("status") != "done":
        return []
    try:
        return chunk_faces_from_ledger(report, video)
    except Exception as exc:  # a moved or unreadable work dir: the page does without
        log.debug("%s: no chunk records for the QC page (%s)", video.get("video_id"), exc)
        return []


def pick_frames(frames: int, chunks: list[dict], count: int) -> tuple[list[int], str]:
    """Up to `count` frame indices spread over the video: the middle frame of chunks that had faces
    when `chunks` says which did, else evenly spaced frames; and how they were chosen."""
    if frames <= 0 or count <= 0:
        return [], ""
    with_faces = [c for c in chunks if int(c.get("faces", 0)) > 0 and int(c["end"]) > int(c["start"])]
    if with_faces:
        n = min(count, len(with_faces))
        picked = [with_faces[round(i * (len(with_faces) - 1) / max(1, n - 1))] for i in range(n)]
        indices = sorted({min(frames - 1, (int(c["start"]) + int(c["end"]) - 1) // 2) for c in picked})
        return indices, "middle frames of chunks with faces"
    n = min(count, frames)
    how = "no faces found: evenly spaced frames" if chunks else "evenly spaced frames (no per-chunk face counts)"
    return sorted({min(frames - 1, int((i + 0.5) * frames / n)) for i in range(n)}), how


def _frame_chunk(info, plan: list, index: int):
    """A one-frame chunk for frame `index`: the planned chunk that holds it (its seek keyframe) with its
    range narrowed, so decode_chunk checks that very frame's pts and stops right after it."""
    starts = [c.start for c in plan]
    chunk = plan[bisect.bisect_right(starts, index) - 1]
    pts = info.frame_pts
    return dataclasses.replace(
        chunk, start=index, end=index + 1, start_pts=pts[index],
        end_pts=pts[index + 1] if index + 1 < len(pts) else None,
        frame_pts=(pts[index],), lead_pts=tuple(pts[chunk.seek_frame:index]))


def decode_frames(uri: str, indices: list[int]) -> tuple[dict[int, Any], Any]:
    """Frames `indices` of the video at `uri` (path or fsspec URL), upright (BGR), and its VideoInfo."""
    from ffray.media import decode_chunk, plan_chunks, probe
    from ffray.pipeline.stages import to_display

    info = probe(uri)
    plan = plan_chunks(info, PLAN_FRAMES)
    images = {}
    for index in indices:
        if not 0 <= index < info.frames:
            raise ValueError(f"{uri}: has frames 0-{info.frames - 1}, not {index}")
        for frame in decode_chunk(uri, _frame_chunk(info, plan, index)):
            images[index] = to_display(frame.image, info.rotation)
    return images, info


def jpeg_thumbnail(image, width: int = THUMB_WIDTH, quality: int = JPEG_QUALITY) -> bytes:
    import cv2

    h, w = image.shape[:2]
    if w > width:
        image = cv2.resize(image, (width, max(1, round(h * width / w))), interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return data.tobytes()


def _why(exc: BaseException) -> str:
    return redact((str(exc).splitlines() or [""])[0] or type(exc).__name__)


def collect_thumbnails(report: dict, max_frames: int = 4, budget_s: float = 60.0,
                       max_total_frames: int = 48) -> dict[str, dict]:
    """Before/after thumbnails of each finished video: `{video_id: {"frames": [{"index", "time",
    "source", "output"}], "how": str, "note": str}}` (JPEG bytes). Never raises: a video whose frames
    cannot be read gets a note instead. `budget_s` bounds the decoding time of the whole batch and
    `max_total_frames` the page's size (fewer frames per video in a large batch)."""
    out: dict[str, dict] = {}
    try:
        videos = [v for v in report.get("videos") or [] if isinstance(v, dict)]
        done = [v for v in videos if v.get("status") == "done"]
        per_video = max(1, min(max_frames, max_total_frames // max(1, len(done))))
        deadline = time.monotonic() + budget_s
        for video in done:
            vid = str(video.get("video_id", ""))
            entry = out[vid] = {"frames": [], "how": "", "note": ""}
            if time.monotonic() > deadline:
                entry["note"] = f"frames not shown: the QC page's time budget ({budget_s:g} s) was spent"
                continue
            try:
                frames = int(video.get("frames") or (video.get("output_info") or {}).get("frames") or 0)
                skip = int((video.get("trim") or [0])[0])  # a trimmed output's frame k is the source's k + skip
                chunks = [{**c, "start": int(c["start"]) - skip, "end": int(c["end"]) - skip}
                          for c in chunk_faces(report, video)]
                indices, entry["how"] = pick_frames(frames, chunks, per_video)
                src, info = decode_frames(str(video["target"]), [k + skip for k in indices])
                dst, _ = decode_frames(str(video["output"]), indices)
                for k in indices:
                    entry["frames"].append({"index": k + skip, "time": info.frame_time(k + skip),
                                            "source": jpeg_thumbnail(src[k + skip]),
                                            "output": jpeg_thumbnail(dst[k])})
            except Exception as exc:  # the page is a by-product: never fail the run for it
                entry["frames"] = []
                entry["note"] = f"frames not shown: {_why(exc)}"
                log.debug("QC thumbnails of %s", vid, exc_info=True)
    except Exception as exc:
        log.debug("QC thumbnails", exc_info=True)
        out[""] = {"frames": [], "how": "", "note": f"frames not shown: {_why(exc)}"}
    return out


# --- rendering --------------------------------------------------------------------------------------


def _e(value: Any) -> str:
    # redact too: a caller's report may not have been through build_report's redaction
    return html.escape(redact("" if value is None else str(value)), quote=True)


def _num(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number == number else None  # NaN


def _fmt(value: Any, digits: int = 2) -> str:
    number = _num(value)
    if number is None:
        return "n/a"
    if number == int(number) and abs(number) < 1e15:
        return f"{int(number):,}"
    return f"{number:,.{digits}f}"


def _hbar_chart(title: str, items: list[tuple[str, Any]], unit: str) -> str:
    """Horizontal bars, one per (label, value); missing values are shown as n/a."""
    if not items:
        return ""
    label_w, bar_w, row_h, pad = 90, 300, 22, 6
    top = max((_num(v) or 0.0) for _, v in items) or 1.0
    height = pad * 2 + row_h * len(items)
    parts = [f'<figure class="chart"><figcaption>{_e(title)}</figcaption>'
             f'<svg role="img" aria-label="{_e(title)}" width="{label_w + bar_w + 110}" height="{height}" '
             f'viewBox="0 0 {label_w + bar_w + 110} {height}">']
    for i, (label, value) in enumerate(items):
        y = pad + i * row_h
        number = _num(value)
        w = 0.0 if number is None else max(1.0, bar_w * number / top)
        text = "n/a" if number is None else f"{_fmt(number)} {unit}"
        short = label if len(label) <= 14 else label[:13] + "\u2026"  # the full name is in the bar's tooltip
        parts.append(f'<text x="{label_w - 6}" y="{y + 15}" text-anchor="end">{_e(short)}</text>'
                     f'<rect x="{label_w}" y="{y + 3}" width="{w:.1f}" height="{row_h - 6}" class="bar">'
                     f'<title>{_e(label)}: {_e(text)}</title></rect>'
                     f'<text x="{label_w + w + 6:.1f}" y="{y + 15}">{_e(text)}</text>')
    parts.append("</svg></figure>")
    return "".join(parts)


def _faces_chart(chunks: list[dict]) -> str:
    """Faces per chunk as vertical bars (consecutive chunks merged into bins past MAX_BARS)."""
    chunks = sorted((c for c in chunks if isinstance(c, dict)), key=lambda c: int(c.get("index", 0)))
    if not chunks:
        return ""
    size = -(-len(chunks) // MAX_BARS)  # chunks per bar
    bins = [chunks[i:i + size] for i in range(0, len(chunks), size)]
    values = [sum(int(c.get("faces", 0)) for c in b) for b in bins]
    top = max(values) or 1
    width, height, left, bottom = 600, 150, 40, 20
    step = (width - left) / len(bins)
    title = "Faces per chunk" if size == 1 else f"Faces per {size} chunks"
    parts = [f'<figure class="chart"><figcaption>{title} ({len(chunks)} chunks)</figcaption>'
             f'<svg role="img" aria-label="{title}" width="{width}" height="{height}" viewBox="0 0 {width} {height}">'
             f'<line x1="{left}" y1="{height - bottom}" x2="{width}" y2="{height - bottom}" class="axis"/>'
             f'<text x="{left - 4}" y="12" text-anchor="end">{top}</text>'
             f'<text x="{left - 4}" y="{height - bottom}" text-anchor="end">0</text>']
    for i, (b, value) in enumerate(zip(bins, values, strict=True)):
        h = max(1.5, (height - bottom - 8) * value / top)  # a chunk without faces still shows, flat and grey
        first, last = b[0], b[-1]
        name = f"chunk {first.get('index')}" if size == 1 else f"chunks {first.get('index')}-{last.get('index')}"
        tip = f"{name} (frames {first.get('start')}-{int(last.get('end', 0)) - 1}): {value} faces"
        parts.append(f'<rect x="{left + i * step + step * 0.1:.2f}" y="{height - bottom - h:.2f}" '
                     f'width="{max(0.5, step * 0.8):.2f}" height="{h:.2f}" class="{"bar" if value else "bar zero"}">'
                     f'<title>{_e(tip)}</title></rect>')
    parts.append(f'<text x="{left}" y="{height - 4}">{_e(chunks[0].get("index"))}</text>'
                 f'<text x="{width}" y="{height - 4}" text-anchor="end">{_e(chunks[-1].get("index"))}</text>'
                 "</svg></figure>")
    return "".join(parts)


def _stage_charts(stages: Any) -> str:
    if not isinstance(stages, dict) or not stages:
        return ""
    names = [s for s in STAGE_ORDER if s in stages] + sorted(s for s in stages if s not in STAGE_ORDER)
    rows = [(s, stages[s]) for s in names if isinstance(stages[s], dict)]
    return ('<div class="charts">'
            + _hbar_chart("Throughput (frames per busy second)", [(s, f.get("frames_per_busy_s")) for s, f in rows],
                          "fps")
            + _hbar_chart("Busy time", [(s, f.get("busy_s")) for s, f in rows], "s")
            + "</div>")


def _table(pairs: list[tuple[str, Any]]) -> str:
    body = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in pairs)
    return f'<table class="kv">{body}</table>' if body else ""


def _data_uri(jpeg: bytes) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")


def _strip(thumbs: dict | None) -> str:
    if not thumbs:
        return ""
    figures = []
    for f in thumbs.get("frames") or []:
        k = _e(f.get("index"))
        when = _num(f.get("time"))
        figures.append(
            f'<figure class="pair"><div class="imgs">'
            f'<img src="{_data_uri(f["source"])}" alt="source frame {k}" title="source frame {k}">'
            f'<img src="{_data_uri(f["output"])}" alt="output frame {k}" title="output frame {k}"></div>'
            f'<figcaption>frame {k}{"" if when is None else f" at {when:.2f} s"}: source | output</figcaption>'
            "</figure>")
    out = ""
    if figures:
        out += f'<p class="muted">Before / after ({_e(thumbs.get("how"))})</p><div class="strip">{"".join(figures)}</div>'
    if thumbs.get("note"):
        out += f'<p class="note">{_e(thumbs["note"])}</p>'
    return out


def _video_section(video: dict, thumbs: dict | None) -> str:
    status = str(video.get("status", ""))
    info = video.get("output_info") if isinstance(video.get("output_info"), dict) else {}
    facts = [("target", video.get("target")), ("output", video.get("output")),
             ("frames", _fmt(video.get("frames"))), ("faces", _fmt(video.get("faces"))),
             ("chunks", _fmt(video.get("chunks"))), ("resumed chunks", _fmt(video.get("resumed_chunks"))),
             ("reused chunks", _fmt(video.get("reused_chunks"))), ("seconds", _fmt(video.get("seconds"), 3))]
    if info:
        size = f", {_fmt(info['size'])} bytes" if _num(info.get("size")) is not None else ""
        facts.append(("output video", f"{info.get('width')}x{info.get('height')} {info.get('video_codec', '')}{size}"))
    parts = [f'<section class="video" id="{_e("v-" + str(video.get("video_id", "")))}">'
             f'<h2>{_e(video.get("video_id"))} <span class="status {_e(status)}">{_e(status)}</span></h2>',
             _table(facts)]
    if video.get("error"):
        parts.append(f'<pre class="error">{_e(video["error"])}</pre>')
    parts.append(_strip(thumbs))
    parts.append(_faces_chart(video.get("chunk_faces") or []))
    if isinstance(video.get("stages"), dict):
        parts.append(_stage_charts(video["stages"]))
    parts.append("</section>")
    return "".join(parts)


STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px;color:#1d2330;background:#f6f7f9}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:0 0 8px;word-break:break-all}
section{background:#fff;border:1px solid #dde1e7;border-radius:8px;padding:14px 16px;margin:14px 0}
.muted{color:#5d6675;margin:6px 0}.note{color:#8a5a00;background:#fff6e0;padding:6px 10px;border-radius:4px}
.status{font-size:12px;padding:2px 8px;border-radius:10px;background:#e4e7ec;vertical-align:middle}
.status.done{background:#d8f3df;color:#17612c}.status.failed{background:#fde0e0;color:#9b1c1c}
.status.partial{background:#fff0c9;color:#7a5200}
table.kv{border-collapse:collapse;margin:6px 0}table.kv th{text-align:left;font-weight:600;padding:2px 12px 2px 0;
color:#5d6675;white-space:nowrap;vertical-align:top}table.kv td{padding:2px 0;word-break:break-all}
pre.error{white-space:pre-wrap;word-break:break-word;background:#fdeeee;color:#7d1212;padding:8px 10px;
border-radius:4px;margin:6px 0}
ul.failures li{margin:4px 0}
.strip{display:flex;flex-wrap:wrap;gap:12px}.pair{margin:0}.pair .imgs{display:flex;gap:2px}
.pair img{display:block;width:280px;max-width:45vw;height:auto;background:#ccc}
.pair figcaption{font-size:12px;color:#5d6675}
.charts{display:flex;flex-wrap:wrap;gap:18px}.chart{margin:8px 0}.chart figcaption{font-weight:600;margin-bottom:2px}
svg text{font-size:11px;fill:#1d2330}svg .bar{fill:#3d7be0}svg .bar.zero{fill:#c8ced8}svg .axis{stroke:#9aa3b0}
"""


def render_qc_page(report: dict, thumbnails: dict | None = None) -> str:
    """One self-contained HTML page of a run report (ffray.pipeline.report) and its thumbnails
    (collect_thumbnails; none: the page without before/after strips)."""
    report = report if isinstance(report, dict) else {}
    thumbnails = thumbnails or {}
    videos = [v for v in report.get("videos") or [] if isinstance(v, dict)]
    status = str(report.get("status", ""))
    title = f"ffray run {report.get('run_id') or ''} of job {report.get('job_id') or ''}".strip()
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>{_e(title)}</title><style>{STYLE}</style></head><body>",
             f'<h1>ffray run report <span class="status {_e(status)}">{_e(status)}</span></h1>',
             _table([("job", report.get("job_id")), ("run", report.get("run_id")),
                     ("job dir", report.get("job_dir"))])]
    if report.get("error"):
        parts.append(f'<pre class="error">{_e(report["error"])}</pre>')

    failed = [v for v in videos if v.get("status") == "failed" or v.get("error")]
    if failed:
        items = "".join(f'<li><a href="#{_e("v-" + str(v.get("video_id", "")))}">{_e(v.get("video_id"))}</a>'
                        f'<pre class="error">{_e(v.get("error") or v.get("status"))}</pre></li>' for v in failed)
        parts.append(f'<section><h2>Failures ({len(failed)})</h2><ul class="failures">{items}</ul></section>')

    totals = report.get("totals") if isinstance(report.get("totals"), dict) else {}
    if totals:
        parts.append("<section><h2>Totals</h2>"
                     + _table([(k.replace("_", " "), _fmt(v, 3)) for k, v in totals.items()]) + "</section>")
    charts = _stage_charts(report.get("stages"))
    if charts:
        parts.append(f"<section><h2>Stages (this run)</h2>{charts}</section>")
    if "" in thumbnails and thumbnails[""].get("note"):
        parts.append(f'<p class="note">{_e(thumbnails[""]["note"])}</p>')
    for video in videos:
        parts.append(_video_section(video, thumbnails.get(str(video.get("video_id", "")))))
    parts.append("</body></html>\n")
    return "\n".join(parts)


# --- writing ---------------------------------------------------------------------------------------


def html_path(json_path: str) -> str:
    """`.../report.json` -> `.../report.html`."""
    return (json_path[: -len(".json")] if json_path.endswith(".json") else json_path) + ".html"


def write_qc_page(report: dict, json_path: str, *more_json_paths: str, max_frames: int = 4,
                  budget_s: float = 60.0) -> str:
    """Render the page once and write it beside each report JSON (path or fsspec URL; whole or not at
    all, as the report itself). Returns the page. Raises only if a page cannot be written."""
    from ffray.pipeline.storage import write_atomic

    videos = []
    for video in report.get("videos") or []:
        if isinstance(video, dict) and "chunk_faces" not in video:
            video = {**video, "chunk_faces": chunk_faces(report, video)}  # a copy: the caller's is untouched
        videos.append(video)
    report = {**report, "videos": videos}
    page = render_qc_page(report, collect_thumbnails(report, max_frames=max_frames, budget_s=budget_s))
    data = page.encode("utf-8")
    for path in (json_path, *more_json_paths):
        write_atomic(html_path(str(path)), data)
    return page
