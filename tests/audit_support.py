"""A small curated run for the audit workbench: clips whose frame i is a flat grey of level
GREY0 + GREY_STEP * i, so a browser can tell which decoded frame it shows from one pixel.
And the workbench on a real server on loopback (in a thread, or `pks audit serve` in its own
process), with annotators who submit as fast as it answers (the load test and
benchmarks/audit_load.py)."""

from __future__ import annotations

import json
import math
import re
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path

import av
import httpx
import numpy as np
import uvicorn

import taxonomy
from pipelines.parts import build_manifest, write_part
from pks.config import load_config
from pks.record import ClipRecord

GREY0, GREY_STEP = 16, 9
FPS = 24


def caption(**kw) -> dict:
    tax = taxonomy.load()
    base = {
        "narrative": "",
        "style": [],
        "motion": [],
        "camera": ["static"],
        "vfx": [],
        "shot": tax.axes["shot"].ids[0],
    }
    return tax.validate({**base, **kw})


def encode_ramp(path: Path, n: int) -> None:
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=Fraction(FPS))
        s.width, s.height, s.pix_fmt = 128, 96, "yuv420p"
        s.options = {"crf": "0", "preset": "ultrafast"}
        for i in range(n):
            img = np.full((96, 128, 3), GREY0 + GREY_STEP * i, np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def make_run(
    out: Path,
    n_clips: int = 4,
    frames: int = 24,
    narrative: str = "a girl runs",
    camera: tuple[list[str], dict] | None = None,
) -> list[str]:
    """`camera`: every clip's measured camera, (camera_motion tags, signals["camera"]); else static, unmeasured."""
    tags, measured = camera or (["static"], None)
    signals = {"smear_at": [5, 6], "impact_at": [12], **({"camera": measured} if measured is not None else {})}
    (out / "parts").mkdir(parents=True)
    (out / "clips").mkdir()
    recs = [
        ClipRecord(
            video_id="v1",
            source_path="v1.mp4",
            start_frame=k * frames,
            end_frame=(k + 1) * frames,
            fps=FPS,
            width=128,
            height=96,
            caption=caption(narrative=narrative, camera=["shake"]),
            caption_source="tiny|prompt=1|taxonomy=v1",
            camera_motion=tags,
            deformation_score=0.4,
            curriculum_stage=1,
            cadence=2.0,
            signals=json.dumps(signals),
        )
        for k in range(n_clips)
    ]
    for r in recs:
        encode_ramp(out / "clips" / f"{r.clip_id}.mp4", frames)
    write_part(out, "v1", recs)
    build_manifest(out, load_config())
    return [r.clip_id for r in recs]


# ---- a real server on loopback ----------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def login_as(client: httpx.Client, token: str) -> str:
    """Log `client` (an httpx or a FastAPI test client) in; returns the session's CSRF token."""
    r = client.post("/login", data={"token": token}, follow_redirects=False)
    assert r.status_code == 303, r.status_code
    return re.search(r'"X-CSRF-Token": "([^"]+)"', client.get("/").text).group(1)


@contextmanager
def thread_server(app):
    """Serve `app` with uvicorn on a free loopback port in a thread of this process; yields its URL."""
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    t = threading.Thread(target=srv.run, daemon=True)
    t.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        assert t.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        t.join(10)


@contextmanager
def cli_server(out: Path, *args: str):
    """`pks audit serve OUT ARGS` in its own process on a free loopback port; yields (URL,
    process). SIGKILLed on the way out, if it still runs."""
    port = free_port()
    root = Path(__file__).resolve().parent.parent  # `-m pks.cli` from this checkout
    proc = subprocess.Popen(
        [sys.executable, "-m", "pks.cli", "audit", "serve", str(out), "--port", str(port), *args],
        cwd=root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(base + "/login")
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline, "pks audit serve did not start"
                time.sleep(0.1)
        yield base, proc
    finally:
        proc.kill()
        proc.wait()


def load(base: str, tokens: list[str], ids: list[str], seconds: float) -> dict:
    """One thread per token, each logged in as its own annotator, submitting a label on the
    next of `ids` as soon as the last one was answered, for `seconds`. Returns the count of
    submissions answered 200, the other statuses (or errors) and every latency (s), sorted."""
    deadline = time.monotonic() + seconds
    acked, failed, latencies = [0], [], []
    lock = threading.Lock()

    def annotator(k: int, token: str) -> None:
        with httpx.Client(base_url=base, timeout=60) as c:
            try:
                csrf = login_as(c, token)
            except (AssertionError, httpx.HTTPError) as e:
                with lock:
                    failed.append(f"login: {e!r}")
                return
            i = k
            while time.monotonic() < deadline:
                form = {"clip_id": ids[i % len(ids)], "csrf": csrf, "camera": "static", "shot": "wide", "mode": "blind"}
                t0 = time.perf_counter()
                try:
                    status = c.post("/submit", data=form).status_code
                except httpx.HTTPError as e:
                    status = repr(e)
                dt = time.perf_counter() - t0
                with lock:
                    latencies.append(dt)
                    if status == 200:
                        acked[0] += 1
                    else:
                        failed.append(status)
                i += 1

    threads = [threading.Thread(target=annotator, args=(k, t)) for k, t in enumerate(tokens)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    return {"acked": acked[0], "failed": failed, "latencies": sorted(latencies)}


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1) of a sorted list."""
    return sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)] if sorted_values else float("nan")
