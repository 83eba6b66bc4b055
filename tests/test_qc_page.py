"""The QC page (ffray.pipeline.qc_page): rendered from a real run's report and from a synthetic one
with hostile texts, then opened in headless Chromium over the DevTools protocol (a pipe: standard
library only) to check that it loads nothing from outside, runs nothing, logs no error and shows
every image. The browser cases skip when Chromium is not installed (Debian: apt-get install chromium)."""

from __future__ import annotations

import base64
import html
import json
import os
import select
import shlex
import shutil
import subprocess
import time
from html.parser import HTMLParser
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import asset
from pipeline_helpers import VIDEO, YUNET, contract_face_options, moto_s3, small_config, start_local_ray

from ffray.pipeline.qc_page import (
    collect_thumbnails,
    html_path,
    jpeg_thumbnail,
    pick_frames,
    render_qc_page,
    write_qc_page,
)

# Ray Data warns about its own deprecated DataContext fields whenever a context is copied to workers
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")


def html_escape(text: str) -> str:
    return html.escape(text, quote=True)


HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'


# --- a DevTools client over --remote-debugging-pipe ------------------------------------------------


def chromium_binary() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("Chromium is not installed (Debian: apt-get install chromium); the page is not checked in a browser")


class Browser:
    """Headless Chromium driven through the DevTools protocol on fds 3 (commands) and 4 (replies),
    NUL-separated JSON, so no websocket package is needed."""

    def __init__(self, binary: str, profile: Path):
        cmd_read, self._cmd_write = os.pipe()
        self._res_read, res_write = os.pipe()
        flags = ["--headless=new", "--disable-gpu", "--no-sandbox", "--remote-debugging-pipe",
                 f"--user-data-dir={profile}", "--no-first-run", "--no-default-browser-check",
                 "--disable-extensions", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--mute-audio", "about:blank"]
        # the protocol's fds are 3 and 4: the shell moves the pipe ends there and closes the originals
        script = (f"exec {shlex.quote(binary)} {' '.join(shlex.quote(f) for f in flags)} "
                  f"3<&{cmd_read} 4>&{res_write} {cmd_read}<&- {res_write}>&-")
        self.log = profile.parent / "chromium.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(["bash", "-c", script], pass_fds=(cmd_read, res_write), stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=log, start_new_session=True)
        os.close(cmd_read)
        os.close(res_write)
        self._next_id = 0
        self._buffer = b""
        self.events: list[dict] = []

    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._res_read], [], [], left)[0]:
                raise TimeoutError(f"no reply from Chromium; its log: {self.log.read_text(errors='replace')[-2000:]}")
            chunk = os.read(self._res_read, 1 << 20)
            if not chunk:
                raise ConnectionError(f"Chromium closed the pipe; its log: {self.log.read_text(errors='replace')[-2000:]}")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 30) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._cmd_write, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._next_id:
                assert "error" not in reply, (method, reply["error"])
                return reply.get("result", {})
            if "method" in reply:
                self.events.append(reply)

    def wait_for(self, method: str, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        for event in self.events:
            if event["method"] == method:
                return event
        while True:
            reply = self._read_message(deadline)
            if "method" in reply:
                self.events.append(reply)
                if reply["method"] == method:
                    return reply

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=10)
        except (OSError, TimeoutError, AssertionError):
            pass
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, 9)  # our own process group (start_new_session)
            self.proc.wait(timeout=15)
        os.close(self._cmd_write)
        os.close(self._res_read)


IMAGES_JS = """Promise.all(Array.from(document.images).map(i => i.decode().then(() => true, () => false)))
.then(decoded => JSON.stringify({
  images: Array.from(document.images).map((i, n) => {
    const r = i.getBoundingClientRect();
    return {alt: i.alt, complete: i.complete, width: i.naturalWidth, height: i.naturalHeight, decoded: decoded[n],
            x: r.left + scrollX, y: r.top + scrollY, w: r.width, h: r.height};
  }),
  scripts: document.scripts.length,
  handlers: Array.from(document.querySelectorAll('*')).filter(e => Array.from(e.attributes).some(
    a => a.name.startsWith('on'))).length,
  text: document.body.innerText,
  height: document.documentElement.scrollHeight}))"""


def open_in_browser(page: Path, tmp_path: Path) -> dict:
    """Load `page` from file:// and report what a person's browser would: every request it made,
    console messages, uncaught exceptions, log entries, its images, its text and a full-page screenshot."""
    browser = Browser(chromium_binary(), tmp_path / "profile")
    try:
        target = browser.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = browser.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Runtime", "Log", "Page", "Network"):
            browser.call(f"{domain}.enable", session=session)
        browser.call("Emulation.setDeviceMetricsOverride",
                     {"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": False}, session=session)
        browser.call("Page.navigate", {"url": page.as_uri()}, session=session)
        browser.wait_for("Page.loadEventFired")
        ready = f"location.href === {json.dumps(page.as_uri())} && document.readyState === 'complete'"
        deadline = time.monotonic() + 20
        while not browser.call("Runtime.evaluate", {"expression": ready, "returnByValue": True},
                               session=session)["result"]["value"]:
            assert time.monotonic() < deadline, "the page did not finish loading"  # (a stale about:blank load)
            time.sleep(0.1)
        state = json.loads(browser.call("Runtime.evaluate", {"expression": IMAGES_JS, "awaitPromise": True,
                                                             "returnByValue": True}, session=session)["result"]["value"])
        shot = browser.call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": {
            "x": 0, "y": 0, "width": 1280, "height": state["height"], "scale": 1}}, session=session)
        state["screenshot"] = cv2.imdecode(np.frombuffer(base64.b64decode(shot["data"]), np.uint8), cv2.IMREAD_COLOR)
        events = browser.events
    finally:
        browser.close()
    state["requests"] = [e["params"]["request"]["url"] for e in events if e["method"] == "Network.requestWillBeSent"]
    state["failed_requests"] = [e["params"] for e in events if e["method"] == "Network.loadingFailed"]
    state["exceptions"] = [e["params"] for e in events if e["method"] == "Runtime.exceptionThrown"]
    state["console"] = [e["params"] for e in events if e["method"] == "Runtime.consoleAPICalled"]
    state["log"] = [e["params"]["entry"] for e in events if e["method"] == "Log.entryAdded"]
    if os.environ.get("FFRAY_QC_SCREENSHOTS"):  # to look at the page: a folder for the screenshots
        cv2.imwrite(str(Path(os.environ["FFRAY_QC_SCREENSHOTS"]) / f"{page.parent.name}-{page.stem}.png"),
                    state["screenshot"])
    return state


def check_in_browser(page: Path, tmp_path: Path, images: int) -> dict:
    state = open_in_browser(page, tmp_path)
    # offline: nothing but the page itself and its data: images was requested, and nothing failed
    assert all(u == page.as_uri() or u.startswith("data:") for u in state["requests"]), state["requests"]
    assert state["failed_requests"] == []
    assert state["exceptions"] == [] and state["console"] == [], (state["exceptions"], state["console"])
    assert [e for e in state["log"] if e.get("level") in ("error", "warning")] == [], state["log"]
    assert state["scripts"] == 0 and state["handlers"] == 0
    assert len(state["images"]) == images
    shot = state["screenshot"]
    for image in state["images"]:
        assert image["complete"] and image["decoded"] and image["width"] > 0 and image["height"] > 0, image
        assert image["w"] > 100 and image["h"] > 50, image  # laid out at thumbnail size
        x, y, w, h = (round(image[k]) for k in ("x", "y", "w", "h"))
        area = shot[y + 2:y + h - 2, x + 2:x + w - 2]
        assert area.size and area.std() > 10, image  # painted, not blank
    return state


# --- a synthetic report: hostile texts, a failure, no thumbnails for one video ---------------------


def synthetic_report() -> dict:
    return {
        "job_id": "job<1>", "job_dir": f"/work/{HOSTILE}/jobs/job<1>", "run_id": "run&1", "status": "partial",
        "error": "",
        "videos": [
            {"video_id": "0000-good", "video_key": "k0", "target": "/in/good.mp4",
             "output": "s3://qc-user:hunter2@bucket/out/good.mp4",
             "status": "done", "error": "", "frames": 64, "faces": 40, "chunks": 4, "resumed_chunks": 0,
             "reused_chunks": 0, "seconds": 3.2, "output_info": {"width": 320, "height": 240, "video_codec": "h264"},
             "chunk_faces": [{"index": i, "start": 16 * i, "end": 16 * i + 16, "faces": f}
                             for i, f in enumerate((0, 12, 28, 0))]},
            {"video_id": f"0001-{HOSTILE}", "video_key": "k1", "target": f"s3://bucket/{HOSTILE}.mp4",
             "output": "/out/bad.mp4", "status": "failed", "error": f"s3://bucket/x.mp4: chunk 0 (frames 0-15): {HOSTILE}",
             "frames": 0, "faces": 0, "chunks": 0, "resumed_chunks": 0, "reused_chunks": 0, "seconds": 0,
             "output_info": {}},
        ],
        "stages": {"read": {"busy_s": 1.5, "frames_per_busy_s": 42.7, "frames": 64},
                   "detector": {"busy_s": 2.0, "frames_per_busy_s": None, "frames": 64},
                   f"x{HOSTILE}": {"busy_s": 0.1, "frames_per_busy_s": 3}},
        "totals": {"videos": 2, "succeeded": 1, "failed": 1, "frames": 64, "seconds": 4.25,
                   "frames_per_second": None},
    }


def synthetic_thumbnails() -> dict:
    rng = np.random.default_rng(0)
    frame = cv2.resize(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8), (640, 480), interpolation=cv2.INTER_NEAREST)
    return {"0000-good": {"how": "middle frames of chunks with faces", "note": "",
                          "frames": [{"index": k, "time": k / 24, "source": jpeg_thumbnail(frame),
                                      "output": jpeg_thumbnail(255 - frame)} for k in (23, 39)]},
            f"0001-{HOSTILE}": {"frames": [], "how": "", "note": f"frames not shown: {HOSTILE}"}}


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def parsed_tags(page: str) -> list[tuple[str, dict]]:
    parser = _Tags()
    parser.feed(page)
    parser.close()
    return parser.tags


def test_synthetic_page_escapes_everything():
    page = render_qc_page(synthetic_report(), synthetic_thumbnails())
    tags = parsed_tags(page)
    assert not [t for t, _ in tags if t in ("script", "iframe", "object", "embed", "link", "base")]
    assert not [a for _, attrs in tags for a in attrs if a.startswith("on")]
    assert [attrs["src"][:23] for t, attrs in tags if t == "img"] == ["data:image/jpeg;base64,"] * 4
    assert page.count(html_escape(HOSTILE)) >= 5  # job dir, video id, error, stage name, note
    assert "http://" not in page and "https://" not in page and "src=\"data:image/jpeg;base64," in page
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    assert "hunter2" not in page and "s3://***@bucket/out/good.mp4" in page  # URL credentials masked
    assert "Failures (1)" in page and "n/a" in page and "Faces per chunk (4 chunks)" in page
    assert page.count("<rect") == 4 + 3 * 2  # 4 chunks; 3 stages in two charts


def test_render_tolerates_odd_reports():
    """A page is written whatever the report holds: a job that never started, missing or odd fields."""
    for report in ({}, {"a": 1}, {"videos": None, "stages": [], "totals": "x"},
                   {"status": "failed", "error": HOSTILE, "videos": [{"video_id": 1, "status": "failed"}, "junk"]}):
        page = render_qc_page(report, {})
        assert page.startswith("<!DOCTYPE html>") and "<script" not in page
    many = [{"index": i, "start": i, "end": i + 1, "faces": i % 3} for i in range(1000)]
    page = render_qc_page({"videos": [{"video_id": "v", "status": "done", "chunk_faces": many}]})
    assert "Faces per 5 chunks (1000 chunks)" in page and page.count("<rect") == 200


def test_pick_frames():
    chunks = [{"index": i, "start": 16 * i, "end": 16 * i + 16, "faces": f} for i, f in enumerate((0, 5, 0, 0, 9, 3))]
    frames, how = pick_frames(96, chunks, 2)
    assert frames == [23, 87] and "faces" in how  # the first and last chunks with faces, middle frames
    assert pick_frames(96, chunks, 10)[0] == [23, 71, 87]
    assert pick_frames(96, [], 4) == ([12, 36, 60, 84], "evenly spaced frames (no per-chunk face counts)")
    assert pick_frames(96, [{**c, "faces": 0} for c in chunks], 1)[1].startswith("no faces found")
    assert pick_frames(3, [], 4)[0] == [0, 1, 2] and pick_frames(0, [], 4) == ([], "")


def test_missing_media_is_a_note_not_a_failure(tmp_path):
    report = synthetic_report()
    report["videos"][0].update(target=str(tmp_path / "gone.mp4"), output=f"s3://{HOSTILE}/nope.mp4")
    thumbs = collect_thumbnails(report)
    assert thumbs["0000-good"]["frames"] == [] and "gone.mp4" in thumbs["0000-good"]["note"]
    page = write_qc_page(report, str(tmp_path / "job" / "report.json"))
    assert (tmp_path / "job" / "report.html").read_text() == page and "frames not shown" in page
    assert [p.name for p in (tmp_path / "job").iterdir()] == ["report.html"]  # no temporary left


def test_write_to_an_fsspec_url():
    import fsspec

    fs = fsspec.filesystem("memory")
    write_qc_page({"job_id": "j", "videos": []}, "memory://qc-test/jobs/j/report.json")
    assert fs.cat_file("/qc-test/jobs/j/report.html").startswith(b"<!DOCTYPE html>")
    assert html_path("s3://b/x/report.json") == "s3://b/x/report.html" and html_path("r") == "r.html"


def test_synthetic_page_in_browser(tmp_path):
    page = tmp_path / "synthetic" / "report.html"
    page.parent.mkdir()
    page.write_text(render_qc_page(synthetic_report(), synthetic_thumbnails()))
    state = check_in_browser(page, tmp_path, images=4)
    assert HOSTILE in state["text"]  # shown as text, never run
    assert "Failures (1)" in state["text"] and "frames not shown" in state["text"]


# --- a real run ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    """One small real job (real YuNet, contract swapper) on a local Ray; report.html comes from the hook
    in report.write_reports."""
    import ray

    from ffray.pipeline.driver import VideoRequest, run_swap

    video, yunet, source = asset(VIDEO), asset(YUNET), asset("media/meds-aa-S001-01.jpg")
    folder = tmp_path_factory.mktemp("qc-run")
    options = contract_face_options(folder / "models", yunet, enhancer=False)
    config = small_config(folder / "work", gpus=(0, 0, 0))
    start_local_ray(folder / "ray", num_cpus=4, num_gpus=0)
    try:
        result = run_swap([VideoRequest(str(video), str(folder / "out.mp4"), (str(source),))], options, config)
    finally:
        ray.shutdown()
    assert result.ok, result.videos[0].error
    return result


@pytest.mark.ray
@pytest.mark.slow
def test_real_run_writes_the_page(real_run):
    run_json = Path(real_run.report_path)
    latest_json = Path(real_run.job_dir) / "report.json"
    run_page, latest_page = run_json.with_suffix(".html"), latest_json.with_suffix(".html")
    assert run_page.read_text() == latest_page.read_text()
    page = run_page.read_text()
    assert len(page) < 600_000 and html_escape(real_run.videos[0].target) in page
    assert "Faces per chunk" in page and "middle frames of chunks with faces" in page
    for stage in ("read", "detector", "swapper", "writer"):
        assert f">{stage}</text>" in page
    # the strip: frames with faces, source and output differ where the faces were swapped
    thumbs = collect_thumbnails(json.loads(run_json.read_text()) | {"videos": [
        {**real_run.report["videos"][0], "chunk_faces": []}]})  # without face counts: evenly spaced
    assert [f["index"] for f in thumbs["0000-video_01"]["frames"]] == [11, 33, 56, 78]
    pairs = 0
    for f in thumbs["0000-video_01"]["frames"]:
        src, out = (cv2.imdecode(np.frombuffer(f[k], np.uint8), cv2.IMREAD_COLOR) for k in ("source", "output"))
        assert src.shape == out.shape == (240, 320, 3) and len(f["source"]) < 40_000
        blocks = np.abs(src.astype(int) - out.astype(int)).mean(axis=2).reshape(15, 16, 20, 16).mean(axis=(1, 3))
        pairs += np.median(blocks) < 5 and blocks.max() > 30  # the same picture, with a face changed
    assert pairs == 4


@pytest.mark.ray
@pytest.mark.slow
def test_page_of_videos_on_s3_written_to_s3(real_run):
    """Sources, outputs and the work dir may all be fsspec URLs: frames are read and the page written there."""
    (video,) = real_run.report["videos"]
    with moto_s3("ffray-qc") as fs:
        fs.put_file(video["target"], "ffray-qc/in/video.mp4")
        fs.put_file(video["output"], "ffray-qc/out/video.mp4")
        report = {**real_run.report, "videos": [{**video, "target": "s3://ffray-qc/in/video.mp4",
                                                 "output": "s3://ffray-qc/out/video.mp4"}]}
        page = write_qc_page(report, "s3://ffray-qc/work/jobs/j/report.json")
        assert fs.cat_file("ffray-qc/work/jobs/j/report.html").decode() == page
        assert fs.find("ffray-qc/work") == ["ffray-qc/work/jobs/j/report.html"]
    assert page.count('src="data:image/jpeg;base64,') == 8 and "frames not shown" not in page


@pytest.mark.ray
@pytest.mark.slow
def test_real_page_in_browser(real_run, tmp_path):
    page = Path(real_run.report_path).with_suffix(".html")
    state = check_in_browser(page, tmp_path, images=8)
    assert "0000-video_01" in state["text"] and "Busy time" in state["text"]
