"""`pks audit serve`: the workbench in a browser. FastAPI + Jinja2 templates + HTMX (vendored).

Every route but /login and /static needs a session cookie (pages redirect to /login, the rest
answer 401); every POST carries the session's CSRF token (form field or X-CSRF-Token header);
Jinja2 escapes every text it shows (narratives are model output); clips are served by clip_id
looked up in the manifest, never by a path from the request; bodies over `max_body` bytes are
refused before they are read. Submissions go straight to SQLite (WAL, synchronous=FULL), so
what the server acknowledged survives a kill -9.
"""
from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import av
import cv2
import numpy as np
import pyarrow.parquet as pq
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

import taxonomy
from annotators.audit.queue import QueueConfig, next_clips
from annotators.audit.stats import audit_stats, format_stats
from annotators.audit.store import Store
from taxonomy.loader import CaptionError, SHOT_AXIS, TAG_AXES

HERE = Path(__file__).parent
COOKIE = "pks_audit"
FAILURE_REASONS = ("texture boiling", "melting or warping", "identity drift", "tearing", "ghosting / frame blending",
                   "frozen", "block noise", "other")
COLUMNS = ["clip_id", "status", "fps", "start_frame", "end_frame", "caption", "caption_source", "camera_motion",
           "motion_score", "deformation_score", "cadence", "smear_frames", "impact_frames", "curriculum_stage",
           "quality_flags", "signals"]


class BodyLimit:
    """ASGI middleware: refuse request bodies over `limit` bytes (by Content-Length, and
    bodies sent without one) before the app reads them."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] in ("POST", "PUT", "PATCH"):
            headers = dict(scope["headers"])
            length = headers.get(b"content-length")
            if length is None or int(length) > self.limit:
                status = 411 if length is None else 413
                await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"text/plain")]})
                await send({"type": "http.response.body", "body": b"request body too large" if status == 413 else b"length required"})
                return
        await self.app(scope, receive, send)


class Auth(Exception):
    pass


def create_app(out: str | Path, queue: QueueConfig | None = None, max_body: int = 64 * 1024) -> FastAPI:
    out = Path(out)
    tax = taxonomy.load()
    queue = queue or QueueConfig()
    local = threading.local()
    manifest: dict = {"mtime": None, "rows": {}}
    lock = threading.Lock()

    def store() -> Store:  # one SQLite connection per server thread
        if getattr(local, "store", None) is None:
            local.store = Store(out)
        return local.store

    def rows() -> dict[str, dict]:
        """The manifest's ok clips that have a clip file, reloaded when the manifest changes."""
        path = out / "manifest.parquet"
        mtime = path.stat().st_mtime_ns
        with lock:
            if manifest["mtime"] != mtime:
                table = pq.read_table(path, columns=COLUMNS).to_pylist()
                manifest["rows"] = {r["clip_id"]: r for r in table
                                    if r["status"] == "ok" and (out / "clips" / f"{r['clip_id']}.mp4").exists()}
                manifest["mtime"] = mtime
            return manifest["rows"]

    app = FastAPI(title="PKS audit", docs_url=None, redoc_url=None, openapi_url=None)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    templates = Jinja2Templates(directory=HERE / "templates")  # autoescapes .html

    @app.exception_handler(Auth)
    async def _login_first(request: Request, _exc: Auth):
        if request.method == "GET" and "hx-request" not in request.headers:
            return RedirectResponse("/login", status_code=303)
        return Response("login required", status_code=401)

    def who(request: Request) -> tuple[str, str, str]:
        sid = request.cookies.get(COOKIE)
        s = store().session(sid) if sid else None
        if s is None:
            raise Auth()
        return s

    async def checked(request: Request) -> tuple[tuple[str, str, str], dict]:
        """(user, role, csrf) and the form, for a POST whose CSRF token matches the session's."""
        user = who(request)
        form = await request.form()
        token = request.headers.get("x-csrf-token") or form.get("csrf")
        if token != user[2]:
            raise HTTPException(403, "bad or missing CSRF token")
        return user, form

    def panel(request: Request, user, clip_id: str | None, mode: str, reveal: dict | None = None):
        """The clip page for clip_id, or for the next clip in the user's queue when it is None."""
        rs = rows()
        latest = store().latest("label")
        done = {c: set(per) for c, per in latest.items()}
        upcoming = next_clips(list(rs.values()), done, set(store().final("gold")), user[0], queue, n=2)
        if clip_id is None:
            clip_id = upcoming[0] if upcoming else None
        r = rs.get(clip_id) if clip_id else None
        signals = json.loads(r["signals"] or "{}") if r else {}
        others = {}
        if r and user[1] == "lead":
            others = {u: a.labels for u, a in latest.get(clip_id, {}).items()}
        return templates.TemplateResponse(request, "clip.html", {
            "r": r, "user": user, "mode": mode, "tax": tax, "axes": (*TAG_AXES,), "shot_axis": SHOT_AXIS,
            "signals": signals, "reveal": reveal, "reasons": FAILURE_REASONS, "others": others,
            "prefill": (r["caption"] or {}) if r and mode == "review" else {},
            "prefetch": next((c for c in upcoming if c != clip_id), None),
            "n_frames": (r["end_frame"] - r["start_frame"]) if r else 0,
            "strip": strip_frames(r["end_frame"] - r["start_frame"]) if r else []})

    @app.get("/login", response_class=HTMLResponse)
    def login_page(request: Request):
        return templates.TemplateResponse(request, "login.html", {"error": None})

    @app.post("/login")
    async def login(request: Request):
        form = await request.form()
        user = store().user(str(form.get("token", "")))
        if user is None:
            return templates.TemplateResponse(request, "login.html", {"error": "unknown token"}, status_code=401)
        sid, _ = store().new_session(user[0])
        resp = RedirectResponse("/", status_code=303)
        resp.set_cookie(COOKIE, sid, httponly=True, samesite="strict", max_age=7 * 86400)
        return resp

    @app.post("/logout")
    async def logout(request: Request):
        await checked(request)
        store().end_session(request.cookies.get(COOKIE, ""))
        resp = RedirectResponse("/login", status_code=303)
        resp.delete_cookie(COOKIE)
        return resp

    @app.get("/", response_class=HTMLResponse)
    def home(request: Request, mode: str = "blind"):
        return templates.TemplateResponse(request, "queue.html", {"user": who(request), "mode": mode})

    @app.get("/panel", response_class=HTMLResponse)
    def next_panel(request: Request, mode: str = "blind", clip: str | None = None):
        user = who(request)
        if clip is not None and clip not in rows():
            raise HTTPException(404, "no such clip")
        return panel(request, user, clip, mode if mode in ("blind", "review") else "blind")

    @app.post("/submit", response_class=HTMLResponse)
    async def submit(request: Request):
        user, form = await checked(request)
        clip_id = str(form.get("clip_id", ""))
        r = rows().get(clip_id)
        if r is None:
            raise HTTPException(404, "no such clip")
        caption = {axis: [str(t) for t in form.getlist(axis)] for axis in TAG_AXES}
        caption[SHOT_AXIS] = str(form.get(SHOT_AXIS, ""))
        caption["narrative"] = str(form.get("narrative", ""))[:4000]
        try:
            labels = tax.validate(caption)
        except CaptionError as e:
            raise HTTPException(422, str(e)) from None
        kind = str(form.get("kind", "label"))
        if kind not in ("label", "adjudication", "gold") or (kind != "label" and user[1] != "lead"):
            raise HTTPException(403, "only leads adjudicate or set gold answers")
        failure = form.get("failure") == "on"
        reasons = [str(x) for x in form.getlist("reason") if str(x) in FAILURE_REASONS]
        mode = str(form.get("mode", "blind"))
        store().submit(clip_id, user[0], labels, kind=kind, mode=mode, failure=failure, reasons=reasons)
        reveal = {"clip_id": clip_id, "yours": labels, "model": r["caption"], "failure": failure}
        return panel(request, user, None, mode, reveal)

    @app.get("/media/{clip_id}")
    def media(request: Request, clip_id: str):
        who(request)
        if clip_id not in rows():  # by id from the manifest only: no path from the request reaches the disk
            raise HTTPException(404, "no such clip")
        return FileResponse(out / "clips" / f"{clip_id}.mp4", media_type="video/mp4")

    @app.get("/filmstrip/{clip_id}.jpg")
    def filmstrip(request: Request, clip_id: str):
        who(request)
        r = rows().get(clip_id)
        if r is None:
            raise HTTPException(404, "no such clip")
        cache = out / "audit" / "filmstrips" / f"{clip_id}.jpg"
        if not cache.exists():
            cache.parent.mkdir(parents=True, exist_ok=True)
            strip = _filmstrip(out / "clips" / f"{clip_id}.mp4", r["end_frame"] - r["start_frame"])
            tmp = cache.with_suffix(f".tmp-{os.getpid()}-{threading.get_ident()}.jpg")
            cv2.imwrite(str(tmp), strip)
            os.replace(tmp, cache)
        return FileResponse(cache, media_type="image/jpeg")

    @app.get("/disagreements", response_class=HTMLResponse)
    def disagreements(request: Request):
        """For leads: clips whose annotators disagree and that no one has adjudicated yet."""
        user = who(request)
        if user[1] != "lead":
            raise HTTPException(403, "leads only")
        final = store().final("adjudication")
        def answers(per):
            return {(json.dumps(a.labels, sort_keys=True), a.failure) for a in per.values()}
        open_ = [(c, per) for c, per in sorted(store().latest("label").items())
                 if c not in final and len(answers(per)) > 1]
        return templates.TemplateResponse(request, "disagreements.html", {"user": user, "open": open_, "axes": TAG_AXES})

    @app.get("/stats", response_class=HTMLResponse)
    def stats_page(request: Request):
        user = who(request)
        s = audit_stats(out, store(), tax)
        return templates.TemplateResponse(request, "stats.html", {"user": user, "s": s, "text": format_stats(s)})

    return BodyLimit(app, max_body)


STRIP = 8  # filmstrip thumbnails


def strip_frames(n: int) -> list[int]:
    """The clip frames the filmstrip shows (evenly spaced, first and last included)."""
    return sorted({round(k * (n - 1) / (STRIP - 1)) for k in range(STRIP)}) if n > 1 else [0]


def _filmstrip(path: Path, n: int, height: int = 72) -> np.ndarray:
    want = set(strip_frames(n))
    tiles = []
    with av.open(str(path)) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i in want:
                img = f.to_ndarray(format="bgr24")
                tiles.append(cv2.resize(img, (max(1, img.shape[1] * height // img.shape[0]), height)))
            if i >= max(want):
                break
    return np.hstack(tiles) if tiles else np.zeros((height, height, 3), np.uint8)
