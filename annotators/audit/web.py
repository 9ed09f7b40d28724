"""`pks audit serve`: the workbench in a browser. FastAPI + Jinja2 templates + HTMX (vendored).

Every route but /login and /static needs a session cookie (pages redirect to /login, the rest
answer 401); every POST carries the session's CSRF token (form field or X-CSRF-Token header);
Jinja2 escapes every text it shows (narratives are model output); clips are served by clip_id
looked up in the manifest, never by a path from the request; bodies over `max_body` bytes are
refused before they are read. Submissions go straight to SQLite (WAL, synchronous=FULL), so
what the server acknowledged survives a kill -9.

Handlers are plain `def`s: FastAPI runs them in its threadpool, so a slow request (an fsync, a
manifest reload, a filmstrip decode) holds one worker thread, never the event loop that every
other request goes through. Only the request body is read on the loop (`read_form`, real async
I/O). Each worker thread has its own SQLite connection (a connection is not shared between
threads; WAL lets readers run beside the one writer, and writers wait on the busy timeout).

Sessions: an absolute and an idle timeout (store.SESSION_MAX_AGE, SESSION_IDLE), looked up in
the database on every request (so `pks audit revoke` holds at once); the cookie is `Secure`
unless the server only listens on loopback; login attempts are limited per client address.
"""

from __future__ import annotations

import ipaddress
import json
import secrets
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Literal, get_args

import av
import cv2
import numpy as np
import pyarrow.parquet as pq
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.datastructures import FormData

import taxonomy
from annotators.audit.queue import QueueConfig, next_clips
from annotators.audit.stats import audit_stats, bar, by_axis, number
from annotators.audit.store import SESSION_IDLE, SESSION_MAX_AGE, Store
from annotators.signals.motion import camera_phrase
from pks.store import atomic_path
from taxonomy.loader import SHOT_AXIS, TAG_AXES, CaptionError

HERE = Path(__file__).parent
COOKIE = "pks_audit"
Mode = Literal["blind", "review"]  # blind: the model caption stays hidden until you save
MODES = get_args(Mode)
LOGIN_ATTEMPTS = (10, 60.0)  # per client address: at most 10 in any 60 s
FAILURE_REASONS = (
    "texture boiling",
    "melting or warping",
    "identity drift",
    "tearing",
    "ghosting / frame blending",
    "frozen",
    "block noise",
    "other",
)
COLUMNS = [
    "clip_id",
    "status",
    "fps",
    "start_frame",
    "end_frame",
    "caption",
    "caption_source",
    "camera_motion",
    "motion_score",
    "deformation_score",
    "cadence",
    "smear_frames",
    "impact_frames",
    "curriculum_stage",
    "quality_flags",
    "signals",
]


class BodyLimit:
    """ASGI middleware: refuse request bodies over `limit` bytes (by Content-Length, and
    bodies sent without one or with a malformed one) before the app reads them."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] in ("POST", "PUT", "PATCH"):
            refusal = self.refusal(dict(scope["headers"]).get(b"content-length"))
            if refusal:
                await send(
                    {"type": "http.response.start", "status": refusal[0], "headers": [(b"content-type", b"text/plain")]}
                )
                await send({"type": "http.response.body", "body": refusal[1]})
                return
        await self.app(scope, receive, send)

    def refusal(self, length: bytes | None) -> tuple[int, bytes] | None:
        if length is None:
            return 411, b"length required"
        if not length.isdigit():  # int() would raise (a 500) or take "-1" and " 1_0 "
            return 400, b"malformed content-length"
        if int(length) > self.limit:
            return 413, b"request body too large"
        return None


class SlidingWindow:
    """At most `n` events in any `window` seconds per key (login attempts per client address)."""

    def __init__(self, n: int, window: float):
        self.n, self.window = n, window
        self.events: dict[str, deque] = {}
        self.lock = threading.Lock()  # handlers run on several threads

    def allow(self, key: str) -> bool:
        now = time.monotonic()
        with self.lock:
            if len(self.events) > 10_000:  # forget quiet clients, so many addresses cannot grow this forever
                self.events = {k: q for k, q in self.events.items() if q[-1] > now - self.window}
            q = self.events.setdefault(key, deque())
            while q and q[0] <= now - self.window:
                q.popleft()
            if len(q) >= self.n:
                return False
            q.append(now)
            return True


def loopback(host: str) -> bool:
    """Whether a server bound to `host` only takes connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to a public address


async def read_form(request: Request) -> FormData:
    """The POST body, read on the event loop (async I/O) so that the plain-`def` handlers, in
    worker threads, never wait on a slow client."""
    return await request.form()


class Auth(Exception):
    pass


def create_app(
    out: str | Path,
    queue: QueueConfig | None = None,
    max_body: int = 64 * 1024,
    host: str = "127.0.0.1",
    session_idle: float = SESSION_IDLE,
    login_attempts: tuple[int, float] = LOGIN_ATTEMPTS,
) -> BodyLimit:
    """`host`: the interface the server binds to (off loopback, cookies are Secure: serve it
    behind TLS); `session_idle`: seconds without a request that end a session."""
    out = Path(out)
    tax = taxonomy.load()
    queue = queue or QueueConfig()
    local = threading.local()
    manifest: dict = {"mtime": None, "rows": {}}
    lock = threading.Lock()
    attempts = SlidingWindow(*login_attempts)
    s = Store(out)
    s.purge_sessions(idle=session_idle)
    s.close()

    def store() -> Store:  # one SQLite connection per worker thread: connections are not shared
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
                manifest["rows"] = {
                    r["clip_id"]: r
                    for r in table
                    if r["status"] == "ok" and (out / "clips" / f"{r['clip_id']}.mp4").exists()
                }
                manifest["mtime"] = mtime
            return manifest["rows"]

    app = FastAPI(title="PKS audit", docs_url=None, redoc_url=None, openapi_url=None)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    templates = Jinja2Templates(directory=HERE / "templates")  # autoescapes .html
    templates.env.filters["number"] = number  # the stats page prints figures as `pks audit stats` does
    templates.env.globals["bar"] = bar

    @app.exception_handler(Auth)
    async def _login_first(request: Request, _exc: Auth):
        if request.method == "GET" and "hx-request" not in request.headers:
            return RedirectResponse("/login", status_code=303)
        return Response("login required", status_code=401)

    def who(request: Request) -> tuple[str, str, str]:
        sid = request.cookies.get(COOKIE)
        s = store().session(sid, idle=session_idle) if sid else None
        if s is None:
            raise Auth()
        return s

    def checked(request: Request, form: FormData) -> tuple[str, str, str]:
        """(user, role, csrf) for a POST whose CSRF token matches the session's."""
        user = who(request)
        token = request.headers.get("x-csrf-token") or form.get("csrf")
        # constant time, so response timing tells nothing about how much of a guess was right;
        # bytes, as compare_digest refuses non-ASCII str (and a form field may be a file)
        if not isinstance(token, str) or not secrets.compare_digest(token.encode(), user[2].encode()):
            raise HTTPException(403, "bad or missing CSRF token")
        return user

    def cookie_secure(request: Request) -> bool:
        # off loopback the session id crosses a network: only over TLS. On loopback too when a
        # trusted proxy says the browser used https (uvicorn reads X-Forwarded-Proto).
        return not loopback(host) or request.url.scheme == "https"

    def panel(request: Request, user, clip_id: str | None, mode: str, reveal: dict | None = None):
        """The clip page for clip_id, or for the next clip in the user's queue when it is None."""
        rs = rows()
        done = store().annotators("label")
        upcoming = next_clips(list(rs.values()), done, set(store().annotators("gold")), user[0], queue, n=2)
        if clip_id is None:
            clip_id = upcoming[0] if upcoming else None
        r = rs.get(clip_id) if clip_id else None
        signals = json.loads(r["signals"] or "{}") if r else {}
        others = {}
        if r and clip_id and user[1] == "lead":
            others = {u: a.labels for u, a in store().latest("label", clip_id).get(clip_id, {}).items()}
        return templates.TemplateResponse(
            request,
            "clip.html",
            {
                "r": r,
                "user": user,
                "mode": mode,
                "tax": tax,
                "axes": (*TAG_AXES,),
                "shot_axis": SHOT_AXIS,
                "signals": signals,
                "camera": camera_phrase(r["camera_motion"], signals.get("camera")) if r else "",
                "reveal": reveal,
                "reasons": FAILURE_REASONS,
                "others": others,
                "prefill": (r["caption"] or {}) if r and mode == "review" else {},
                "prefetch": next((c for c in upcoming if c != clip_id), None),
                "n_frames": (r["end_frame"] - r["start_frame"]) if r else 0,
                "strip": strip_frames(r["end_frame"] - r["start_frame"]) if r else [],
            },
        )

    @app.get("/login", response_class=HTMLResponse)
    def login_page(request: Request):
        return templates.TemplateResponse(request, "login.html", {"error": None})

    @app.post("/login")
    def login(request: Request, form: FormData = Depends(read_form)):
        if not attempts.allow(request.client.host if request.client else ""):
            return templates.TemplateResponse(
                request,
                "login.html",
                {"error": "too many attempts: wait a minute"},
                status_code=429,
                headers={"Retry-After": str(round(attempts.window))},
            )
        user = store().user(str(form.get("token", "")))
        if user is None:
            return templates.TemplateResponse(request, "login.html", {"error": "unknown token"}, status_code=401)
        store().purge_sessions(idle=session_idle)  # logins are rare: a good time to drop dead rows
        sid, _ = store().new_session(user[0])
        resp = RedirectResponse("/", status_code=303)
        resp.set_cookie(
            COOKIE, sid, httponly=True, samesite="strict", secure=cookie_secure(request), max_age=SESSION_MAX_AGE
        )
        return resp

    @app.post("/logout")
    def logout(request: Request, form: FormData = Depends(read_form)):
        checked(request, form)
        store().end_session(request.cookies.get(COOKIE, ""))
        resp = RedirectResponse("/login", status_code=303)
        resp.delete_cookie(COOKIE, httponly=True, samesite="strict", secure=cookie_secure(request))
        return resp

    @app.get("/", response_class=HTMLResponse)
    def home(request: Request, mode: Mode = "blind"):
        return templates.TemplateResponse(request, "queue.html", {"user": who(request), "mode": mode})

    @app.get("/panel", response_class=HTMLResponse)
    def next_panel(request: Request, mode: Mode = "blind", clip: str | None = None):
        user = who(request)
        if clip is not None and clip not in rows():
            raise HTTPException(404, "no such clip")
        return panel(request, user, clip, mode)

    @app.post("/submit", response_class=HTMLResponse)
    def submit(request: Request, form: FormData = Depends(read_form)):
        user = checked(request, form)
        clip_id = str(form.get("clip_id", ""))
        r = rows().get(clip_id)
        if r is None:
            raise HTTPException(404, "no such clip")
        caption: dict[str, Any] = {axis: [str(t) for t in form.getlist(axis)] for axis in TAG_AXES}
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
        if mode not in MODES:
            raise HTTPException(422, f"mode must be one of {', '.join(MODES)}")
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
            with atomic_path(cache) as tmp:
                tmp.write_bytes(cv2.imencode(".jpg", strip)[1].tobytes())
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

        open_ = [
            (c, per) for c, per in sorted(store().latest("label").items()) if c not in final and len(answers(per)) > 1
        ]
        return templates.TemplateResponse(
            request, "disagreements.html", {"user": user, "open": open_, "axes": TAG_AXES}
        )

    @app.get("/stats", response_class=HTMLResponse)
    def stats_page(request: Request):
        user = who(request)
        s = audit_stats(out, store(), tax)
        return templates.TemplateResponse(request, "stats.html", {"user": user, "s": s, "tables": by_axis(s, tax)})

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
