"""The audit workbench over HTTP: sessions, CSRF, escaping, clip serving, limits, labelling,
the faces people read (agreement tables, the camera in words), and a real server under load."""

import asyncio
import dataclasses
import math
import re
import secrets
import threading
import time
from html.parser import HTMLParser

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

import taxonomy
from annotators.audit.queue import QueueConfig
from annotators.audit.stats import audit_stats, number
from annotators.audit.store import Store
from annotators.audit.web import create_app, loopback
from annotators.signals.motion import camera_phrase, camera_tags
from audit_support import caption, cli_server, load, login_as, make_run, percentile, thread_server
from pks.cli import app as cli
from pks.config import load_config

EVIL = '<script>alert(1)</script>"><img src=x onerror=alert(2)>'


@pytest.fixture
def served(tmp_path):
    ids = make_run(tmp_path, narrative=EVIL)
    s = Store(tmp_path)
    tokens = {"ann": s.add_user("ann", "annotator"), "lee": s.add_user("lee", "lead")}
    app = create_app(tmp_path, QueueConfig(overlap=2, gold_rate=0.0), max_body=16 * 1024)
    return tmp_path, ids, tokens, app


def login(app, token, **kw):
    c = TestClient(app, **kw)
    return c, login_as(c, token)


def test_everything_needs_a_session(served):
    out, ids, tokens, app = served
    c = TestClient(app)
    assert c.get("/", follow_redirects=False).headers["location"] == "/login"
    for url in (f"/media/{ids[0]}", f"/filmstrip/{ids[0]}.jpg", "/panel"):
        assert c.get(url, headers={"HX-Request": "true"}).status_code == 401
    assert c.post("/submit", data={"clip_id": ids[0]}).status_code == 401
    assert c.post("/login", data={"token": "nope"}).status_code == 401


def test_posts_need_the_csrf_token(served):
    out, ids, tokens, app = served
    c, csrf = login(app, tokens["ann"])
    form = {"clip_id": ids[0], "camera": "static", "shot": "wide", "mode": "blind"}
    assert c.post("/submit", data=form).status_code == 403
    assert c.post("/submit", data={**form, "csrf": "forged"}).status_code == 403
    assert c.post("/submit", data={**form, "csrf": csrf}).status_code == 200


def test_csrf_tokens_are_compared_in_constant_time(served, monkeypatch):
    out, ids, tokens, app = served
    c, csrf = login(app, tokens["ann"])
    compared = []
    real = secrets.compare_digest
    monkeypatch.setattr(secrets, "compare_digest", lambda a, b: compared.append((a, b)) or real(a, b))
    form = {"clip_id": ids[0], "camera": "static", "shot": "wide"}
    assert c.post("/submit", data={**form, "csrf": csrf}).status_code == 200
    assert compared == [(csrf.encode(), csrf.encode())]
    assert c.post("/submit", data={**form, "csrf": "é" * len(csrf)}).status_code == 403  # not a 500
    assert c.post("/submit", data=form, files={"csrf": ("x", b"a file")}).status_code == 403


def test_sessions_end_when_idle_or_old_and_are_purged(served):
    out, ids, tokens, app = served
    s = Store(out)
    c, _ = login(app, tokens["ann"])
    assert c.get("/panel").status_code == 200
    s.db.execute("UPDATE sessions SET seen = seen - 11 * 3600")  # idle 11 h: still on, and the request counts
    assert c.get("/panel").status_code == 200
    assert s.db.execute("SELECT max(seen) FROM sessions").fetchone()[0] > time.time() - 60
    s.db.execute("UPDATE sessions SET seen = seen - 13 * 3600")  # idle 13 h (default limit 12 h)
    assert c.get("/panel", headers={"HX-Request": "true"}).status_code == 401
    c, _ = login(app, tokens["ann"])
    s.db.execute("UPDATE sessions SET created = created - 8 * 86400")  # active, but logged in 8 days ago
    assert c.get("/panel", headers={"HX-Request": "true"}).status_code == 401
    login(app, tokens["ann"])  # a login purges the expired rows
    assert s.db.execute("SELECT count(*) FROM sessions").fetchone()[0] == 1
    short = create_app(out, session_idle=60)
    c, _ = login(short, tokens["ann"])
    s.db.execute("UPDATE sessions SET seen = seen - 61")
    assert c.get("/panel", headers={"HX-Request": "true"}).status_code == 401


def test_revoke_locks_a_user_out_at_once(served):
    out, ids, tokens, app = served
    ann1, csrf1 = login(app, tokens["ann"])
    ann2, _ = login(app, tokens["ann"])
    lee, _ = login(app, tokens["lee"])
    r = CliRunner().invoke(cli, ["audit", "revoke", str(out), "ann"])
    assert r.exit_code == 0 and "2 open session(s) ended" in r.stdout
    for c in (ann1, ann2):
        assert c.get("/panel", headers={"HX-Request": "true"}).status_code == 401
    assert ann1.post("/submit", data={"clip_id": ids[0], "csrf": csrf1, "shot": "wide"}).status_code == 401
    assert TestClient(app).post("/login", data={"token": tokens["ann"]}).status_code == 401
    assert lee.get("/panel").status_code == 200  # nobody else
    r = CliRunner().invoke(cli, ["audit", "revoke", str(out), "nobody"])
    assert r.exit_code == 2 and "no such user" in r.stderr


def test_session_cookie_is_secure_off_loopback(served):
    out, ids, tokens, app = served
    assert loopback("127.0.0.1") and loopback("::1") and loopback("localhost")
    assert not loopback("0.0.0.0") and not loopback("192.168.1.5") and not loopback("audit.example.org")

    def cookie(app, **kw):
        r = TestClient(app, **kw).post("/login", data={"token": tokens["ann"]}, follow_redirects=False)
        return r.headers["set-cookie"].lower()

    assert "secure" not in cookie(app)  # loopback, plain http: the browser could not send it back
    assert "secure" in cookie(create_app(out, host="0.0.0.0"))
    assert "secure" in cookie(app, base_url="https://testserver")  # loopback behind a TLS proxy
    assert "httponly" in cookie(app) and "samesite=strict" in cookie(app)


def test_login_attempts_are_rate_limited_per_client(served):
    out, ids, tokens, app = served
    c = TestClient(app, client=("10.0.0.7", 5000))
    for _ in range(10):
        assert c.post("/login", data={"token": "guess"}).status_code == 401
    r = c.post("/login", data={"token": tokens["ann"]}, follow_redirects=False)
    assert r.status_code == 429 and r.headers["retry-after"] == "60" and "set-cookie" not in r.headers
    login(app, tokens["ann"], client=("10.0.0.8", 5000))  # another client is not held back


def test_mode_is_blind_or_review(served):
    out, ids, tokens, app = served
    c, csrf = login(app, tokens["ann"])
    assert c.get("/?mode=evil").status_code == 422
    assert c.get("/panel?mode=evil").status_code == 422
    form = {"clip_id": ids[0], "csrf": csrf, "camera": "static", "shot": "wide"}
    assert c.post("/submit", data={**form, "mode": "evil"}).status_code == 422
    assert Store(out).history() == []
    assert c.post("/submit", data={**form, "mode": "review"}).status_code == 200
    assert Store(out).history()[0].mode == "review"


def test_malformed_content_length_is_a_400(served):
    out, ids, tokens, app = served
    for length, status in ((b"12abc", 400), (b"-1", 400), (b"", 400), (b"99999999", 413), (None, 411)):
        sent = []

        async def receive():
            return {"type": "http.request", "body": b"token=x", "more_body": False}

        async def send(message, sent=sent):
            sent.append(message)

        headers = [(b"content-type", b"application/x-www-form-urlencoded")]
        headers += [(b"content-length", length)] if length is not None else []
        scope = {
            "type": "http",
            "method": "POST",
            "path": "/login",
            "raw_path": b"/login",
            "query_string": b"",
            "headers": headers,
            "http_version": "1.1",
            "scheme": "http",
            "root_path": "",
            "server": ("127.0.0.1", 80),
            "client": ("127.0.0.1", 5000),
        }
        asyncio.run(app(scope, receive, send))
        assert sent[0]["status"] == status, length


def test_model_text_is_escaped_and_blind_mode_hides_it(served):
    out, ids, tokens, app = served
    c, csrf = login(app, tokens["ann"])
    blind = c.get(f"/panel?clip={ids[0]}&mode=blind").text
    assert "alert(" not in blind  # the model narrative is not on a blind page at all (not even escaped)
    assert "checked" not in blind  # ...nor its tags
    review = c.get(f"/panel?clip={ids[0]}&mode=review").text
    assert "<script>alert(1)</script>" not in review and "<img src=x" not in review
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in review  # shown, as text
    assert 'value="shake" checked' in review  # review mode starts from the model caption


def test_clips_by_id_only(served):
    out, ids, tokens, app = served
    c, _ = login(app, tokens["ann"])
    r = c.get(f"/media/{ids[0]}", headers={"Range": "bytes=0-99"})
    assert r.status_code == 206 and len(r.content) == 100  # ranges: the browser can seek
    assert c.get("/media/..%2Fmanifest.parquet").status_code == 404
    assert c.get("/media/../manifest.parquet").status_code == 404
    assert c.get("/filmstrip/nope.jpg").status_code == 404
    assert c.get(f"/filmstrip/{ids[0]}.jpg").headers["content-type"] == "image/jpeg"


def test_request_size_limit(served):
    out, ids, tokens, app = served
    c, csrf = login(app, tokens["ann"])
    r = c.post("/submit", data={"clip_id": ids[0], "csrf": csrf, "narrative": "x" * 20000})
    assert r.status_code == 413


def test_label_saved_next_clip_and_reveal(served):
    out, ids, tokens, app = served
    c, csrf = login(app, tokens["ann"])
    first = re.search(r'name="clip_id" value="([^"]+)"', c.get("/panel").text).group(1)
    r = c.post(
        "/submit",
        data={
            "clip_id": first,
            "csrf": csrf,
            "camera": ["static", "shake"],
            "shot": "wide",
            "narrative": "runs",
            "mode": "blind",
        },
    )
    assert r.status_code == 200 and f"Saved</b> {first}" in r.text
    nxt = re.search(r'name="clip_id" value="([^"]+)"', r.text).group(1)
    assert nxt != first
    saved = Store(out).latest()[first]["ann"]
    assert saved.labels["camera"] == ["static", "shake"] and saved.labels["shot"] == "wide"
    bad = c.post("/submit", data={"clip_id": first, "csrf": csrf, "camera": "teleport", "shot": "wide"})
    assert bad.status_code == 422  # a tag the taxonomy does not have
    assert (
        c.post("/submit", data={"clip_id": first, "csrf": csrf, "shot": "wide", "kind": "adjudication"}).status_code
        == 403
    )
    lead, lcsrf = login(app, tokens["lee"])
    assert (
        lead.post(
            "/submit",
            data={
                "clip_id": first,
                "csrf": lcsrf,
                "shot": "wide",
                "kind": "adjudication",
                "failure": "on",
                "reason": "tearing",
            },
        ).status_code
        == 200
    )
    assert Store(out).final("adjudication")[first].failure


def test_stats_page(served):
    out, ids, tokens, app = served
    Store(out).submit(
        ids[0], "ann", {"narrative": "", "style": [], "motion": [], "camera": ["static"], "vfx": [], "shot": "wide"}
    )
    c, _ = login(app, tokens["lee"])
    assert "1 labels on 1 clips by 1 annotators" in c.get("/stats").text


# ---- the faces people read ----------------------------------------------------------------
class Tables(HTMLParser):
    """Every <table id=...> of a page: {table id: {row's data-tag (or first cell): [(cell text,
    the style of the bar in it or None)]}}."""

    def __init__(self, page: str):
        super().__init__()
        self.tables, self.table, self.row, self.cell = {}, None, None, None
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self.table = self.tables.setdefault(a.get("id"), {})
        elif tag == "tr" and self.table is not None:
            self.row = (a.get("data-tag"), [])
        elif tag in ("td", "th") and self.row is not None:
            self.cell = ["", None]
        elif tag == "span" and self.cell is not None and "fill" in a.get("class", ""):
            self.cell[1] = (a["class"], a["style"])

    def handle_data(self, data):
        if self.cell is not None:
            self.cell[0] += data

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self.cell is not None:
            self.row[1].append((" ".join(self.cell[0].split()), self.cell[1]))
            self.cell = None
        elif tag == "tr" and self.row is not None:
            if self.row[1] and self.row[1][0][0] not in ("tag", "annotators", "annotator", "the model says"):
                self.table[self.row[0] or self.row[1][0][0]] = self.row[1]
            self.row = None
        elif tag == "table":
            self.table = None


def test_camera_in_words_and_units():
    cam = {
        "pan_per_frame": 0.012,
        "tilt_per_frame": -0.004,
        "zoom_per_frame": math.log(1.008),
        "roll_per_frame": math.radians(0.5),
        "jitter": 0.009,
    }
    width = "of the frame width per frame"  # pan and tilt are both measured in frame widths
    assert camera_phrase(["pan_left"], cam) == f"pan left, 1.2% {width}"
    assert camera_phrase(["pan_right"], {"pan_per_frame": -0.012}) == f"pan right, 1.2% {width}"  # the tag's way
    assert camera_phrase(["tilt_down"], cam) == f"tilt down, 0.4% {width}"
    assert camera_phrase(["tilt_up"], {"tilt_per_frame": 0.00083}) == f"tilt up, 0.083% {width}"  # slow: two figures
    assert camera_phrase(["zoom_in"], cam) == "zoom in, 0.8% per frame"  # log scale, said as the change in size
    assert camera_phrase(["zoom_out"], {"zoom_per_frame": math.log(0.99)}) == "zoom out, 1.0% per frame"
    assert camera_phrase(["roll"], cam) == "roll, 0.5° per frame"  # radians, said in degrees
    assert camera_phrase(["shake"], cam) == "shake, 0.9% of the frame width from frame to frame"
    assert camera_phrase(["static"], cam) == camera_phrase(["static"], None) == "static"
    assert camera_phrase(["pan_left", "zoom_in"], cam) == f"pan left, 1.2% {width}; zoom in, 0.8% per frame"
    # a missing measurement (an older record, no camera stats, a NaN) is said without a size
    assert camera_phrase(["pan_left"], {}) == camera_phrase(["pan_left"], None) == "pan left (no measurement)"
    assert camera_phrase(["zoom_in"], {"zoom_per_frame": float("nan")}) == "zoom in (no measurement)"
    assert camera_phrase(["dolly_zoom"], cam) == "dolly zoom"  # a tag the analyser never sizes
    assert camera_phrase([], cam) == camera_phrase(None, None) == "not measured"
    # the phrase reads camera_tags' own output: its stat names, its signs, its units
    thresholds = dataclasses.asdict(load_config().analyse.camera)  # as analyse passes them
    tags, stats = camera_tags(np.array([[0.006, -0.004, 0.0, 0.0]] * 10), thresholds)  # background moves right, up
    assert camera_phrase(tags, stats) == f"pan left, 0.6% {width}; tilt down, 0.4% {width}"
    tags, stats = camera_tags(np.array([[0.0, 0.0, math.log(1.008), 0.0]] * 10), thresholds)
    assert camera_phrase(tags, stats) == "zoom in, 0.8% per frame"


def test_clip_page_says_the_camera_in_words(tmp_path):
    ids = make_run(
        tmp_path,
        camera=(
            ["pan_left", "zoom_in"],
            {"pan_per_frame": 0.012, "tilt_per_frame": 0.0, "zoom_per_frame": math.log(1.008), "jitter": 0.0},
        ),
    )
    c, _ = login(create_app(tmp_path), Store(tmp_path).add_user("ann", "annotator"))
    page = c.get(f"/panel?clip={ids[0]}").text
    said = re.search(r'<td id="camera">([^<]*)</td>', page).group(1)
    assert said == "pan left, 1.2% of the frame width per frame; zoom in, 0.8% per frame"
    assert "pan_per_frame" not in page and "{" not in said  # not the dict


def test_stats_page_is_tables_per_axis_with_bars(served):
    out, ids, tokens, app = served
    s = Store(out)
    # ann and lee on 4 clips; the model (make_run) says camera "shake" and shot extreme_wide on all
    ann = [["static"], ["static", "shake"], ["pan_left"], []]
    lee = [["static"], ["static"], ["pan_right"], ["shake"]]
    for k, clip in enumerate(ids):
        shot = "wide" if k == 3 else "extreme_wide"
        s.submit(clip, "ann", caption(camera=ann[k], shot=shot))
        s.submit(clip, "lee", caption(camera=lee[k], shot=shot))
    c, _ = login(app, tokens["lee"])
    page = c.get("/stats").text
    assert "<pre" not in page and "8 labels on 4 clips by 2 annotators" in page
    tables = Tables(page).tables
    assert {"axis-style", "axis-motion", "axis-camera", "axis-vfx", "axis-shot", "pairs", "confused"} <= set(tables)
    camera = tables["axis-camera"]
    assert list(camera) == ["camera", "camera/static", "camera/pan_left", "camera/pan_right", "camera/shake"]
    # cells: tag, kappa, alpha, F1, precision, recall, support
    assert [t for t, _ in camera["camera/static"]] == ["static static", "1.000", "1.000", "0.000", "n/a", "0.000", "2"]
    # shake: ann [0,1,0,0], lee [0,0,0,1]. kappa: po 1/2, pe 10/16 -> -1/3. alpha (nominal): observed
    # disagreement 4/8, expected 24/56 -> -1/6. The model said it on 4 clips, people on none.
    shake = camera["camera/shake"]
    assert [t for t, _ in shake] == ["handheld shake shake", "-0.333", "-0.167", "0.000", "0.000", "n/a", "0"]
    assert shake[1][1] == ("fill below", "left: 33.3%; width: 16.7%")  # left of the centre line, in red
    assert camera["camera/static"][1][1] == ("fill", "left: 50.0%; width: 50.0%")  # 1: centre to the right edge
    # shot: people say extreme_wide on 3 clips and wide on 1; the model extreme_wide on all 4
    shot = tables["axis-shot"]
    # no per tag kappa or alpha for shot size (one answer per clip): a dash, not n/a
    row = [t for t, _ in shot["shot/extreme_wide"]]
    assert row == ["extreme wide extreme_wide", "—", "—", "0.857", "0.750", "1.000", "3"]
    assert shot["shot/extreme_wide"][3][1] == ("fill", "left: 0.0%; width: 85.7%")  # F1 grows from the left
    assert [t for t, _ in shot["shot"][1:3]] == ["1.000", "1.000"]  # whole axis: kappa, alpha
    assert list(tables["axis-style"]) == ["style"]  # no one used a style tag: no rows, only the whole axis
    assert "No figure yet" in page and "cel-shaded TV" in page
    # every figure is audit_stats' own, as `pks audit stats` prints it
    st = audit_stats(out, s, taxonomy.load())
    for tag, v in st["agreement"]["per_tag"].items():
        row = tables[f"axis-{tag.split('/')[0]}"].get(tag)
        assert row is not None or (math.isnan(v["kappa"]) and math.isnan(v["alpha"]))
        if row:
            assert [row[1][0], row[2][0]] == [number(v["kappa"]), number(v["alpha"])]
    for tag, v in st["model_vs_human"]["per_tag"].items():
        assert [t for t, _ in tables[f"axis-{tag.split('/')[0]}"][tag][3:]] == [
            number(v["f1"]),
            number(v["precision"]),
            number(v["recall"]),
            str(v["support"]),
        ]
    pair = st["agreement"]["pairs"]["ann ~ lee"]
    assert [t for t, _ in tables["pairs"]["ann ~ lee"][1:]] == [number(pair["kappa"]), "4"]
    assert [t for t, _ in tables["confused"]["camera/shake"]] == ["camera/shake", "camera/static", "2"]


def test_stats_page_with_no_annotations_says_so(served):
    out, ids, tokens, app = served
    c, _ = login(app, tokens["ann"])
    page = c.get("/stats").text
    assert "No annotations yet" in page and "<table" not in page and "<pre" not in page
    Store(out).submit(ids[0], "ann", caption())
    page = c.get("/stats").text  # one annotator: tables, and why kappa and alpha are n/a
    assert "needs two people labelling the same clips" in page and 'id="axis-camera"' in page


def test_leads_see_open_disagreements(served):
    out, ids, tokens, app = served
    s = Store(out)
    base = {"narrative": "", "style": [], "motion": [], "vfx": [], "shot": "wide"}
    s.submit(ids[0], "ann", {**base, "camera": ["static"]})
    s.submit(ids[0], "lee", {**base, "camera": ["shake"]})
    s.submit(ids[1], "ann", {**base, "camera": ["static"]})
    s.submit(ids[1], "lee", {**base, "camera": ["static"]})
    ann, _ = login(app, tokens["ann"])
    assert ann.get("/disagreements").status_code == 403
    lead, csrf = login(app, tokens["lee"])
    page = lead.get("/disagreements").text
    assert ids[0] in page and ids[1] not in page
    lead.post(
        "/submit", data={"clip_id": ids[0], "csrf": csrf, "camera": "shake", "shot": "wide", "kind": "adjudication"}
    )
    assert ids[0] not in lead.get("/disagreements").text


def test_kill_9_of_the_server_loses_no_acknowledged_submission(tmp_path):
    """`pks audit serve` in its own process; every submission it answered 200 to is in the
    database after SIGKILL."""
    ids = make_run(tmp_path)
    token = Store(tmp_path).add_user("ann", "annotator")
    with cli_server(tmp_path) as (base, proc):
        c = httpx.Client(base_url=base)
        csrf = login_as(c, token)
        acked = 0
        for clip in ids:
            r = c.post("/submit", data={"clip_id": clip, "csrf": csrf, "camera": "static", "shot": "wide"})
            acked += r.status_code == 200
        proc.kill()  # SIGKILL
        proc.wait()
    assert acked == len(ids)
    assert sorted(a.clip_id for a in Store(tmp_path).history()) == sorted(ids)


def test_a_slow_request_does_not_stall_the_others(served, monkeypatch):
    """A submission stuck in its SQLite write (a slow disk) holds one worker thread; the
    server keeps answering everyone else. (With async handlers the write ran on the event loop,
    and every other request waited for it.)"""
    out, ids, tokens, app = served
    entered, release = threading.Event(), threading.Event()
    real = Store.submit

    def stuck(self, *a, **kw):
        entered.set()
        release.wait(30)
        return real(self, *a, **kw)

    monkeypatch.setattr(Store, "submit", stuck)
    with thread_server(app) as base:
        ann, lee = httpx.Client(base_url=base, timeout=60), httpx.Client(base_url=base, timeout=5)
        csrf = login_as(ann, tokens["ann"])
        login_as(lee, tokens["lee"])
        slow = []
        t = threading.Thread(
            target=lambda: slow.append(
                ann.post(
                    "/submit", data={"clip_id": ids[0], "csrf": csrf, "camera": "static", "shot": "wide"}
                ).status_code
            )
        )
        t.start()
        try:
            assert entered.wait(30)
            t0 = time.perf_counter()
            assert lee.get("/login").status_code == 200 and lee.get("/panel").status_code == 200
            assert time.perf_counter() - t0 < 2
        finally:
            release.set()
            t.join(30)
    assert slow == [200] and len(Store(out).history()) == 1


def test_eight_annotators_at_once_lose_nothing(tmp_path, capsys):
    """`pks audit serve` in its own process, 8 annotators submitting as fast as it answers for
    a few seconds: every submission answered 200 is in the database, none failed. The 60 s
    version is benchmarks/audit_load.py."""
    ids = make_run(tmp_path, n_clips=6)
    s = Store(tmp_path)
    tokens = [s.add_user(f"a{k}", "annotator") for k in range(8)]
    with cli_server(tmp_path, "--gold-rate", "0") as (base, _):
        res = load(base, tokens, ids, seconds=6)
    with capsys.disabled():
        print(
            f"\naudit load, 8 annotators x 6 s: {res['acked']} acknowledged, "
            f"p50 {percentile(res['latencies'], 0.5) * 1000:.0f} ms, p95 {percentile(res['latencies'], 0.95) * 1000:.0f} ms"
        )
    assert res["failed"] == [] and res["acked"] >= 8
    assert len(Store(tmp_path).history()) == res["acked"]
