"""The audit workbench over HTTP: sessions, CSRF, escaping, clip serving, limits, labelling."""
import re

import pytest
from fastapi.testclient import TestClient

from annotators.audit.queue import QueueConfig
from annotators.audit.store import Store
from annotators.audit.web import create_app
from audit_support import make_run

EVIL = '<script>alert(1)</script>"><img src=x onerror=alert(2)>'


@pytest.fixture
def served(tmp_path):
    ids = make_run(tmp_path, narrative=EVIL)
    s = Store(tmp_path)
    tokens = {"ann": s.add_user("ann", "annotator"), "lee": s.add_user("lee", "lead")}
    app = create_app(tmp_path, QueueConfig(overlap=2, gold_rate=0.0), max_body=16 * 1024)
    return tmp_path, ids, tokens, app


def login(app, token):
    c = TestClient(app)
    r = c.post("/login", data={"token": token}, follow_redirects=False)
    assert r.status_code == 303
    csrf = re.search(r'"X-CSRF-Token": "([^"]+)"', c.get("/").text).group(1)
    return c, csrf


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
    assert c.post("/submit", data={**form, "csrf": csrf}).status_code in (200, 422)


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
    r = c.post("/submit", data={"clip_id": first, "csrf": csrf, "camera": ["static", "shake"], "shot": "wide",
                                "narrative": "runs", "mode": "blind"})
    assert r.status_code == 200 and f"Saved</b> {first}" in r.text
    nxt = re.search(r'name="clip_id" value="([^"]+)"', r.text).group(1)
    assert nxt != first
    saved = Store(out).latest()[first]["ann"]
    assert saved.labels["camera"] == ["static", "shake"] and saved.labels["shot"] == "wide"
    bad = c.post("/submit", data={"clip_id": first, "csrf": csrf, "camera": "teleport", "shot": "wide"})
    assert bad.status_code == 422  # a tag the taxonomy does not have
    assert c.post("/submit", data={"clip_id": first, "csrf": csrf, "shot": "wide", "kind": "adjudication"}).status_code == 403
    lead, lcsrf = login(app, tokens["lee"])
    assert lead.post("/submit", data={"clip_id": first, "csrf": lcsrf, "shot": "wide", "kind": "adjudication",
                                      "failure": "on", "reason": "tearing"}).status_code == 200
    assert Store(out).final("adjudication")[first].failure


def test_stats_page(served):
    out, ids, tokens, app = served
    Store(out).submit(ids[0], "ann", {"narrative": "", "style": [], "motion": [], "camera": ["static"], "vfx": [],
                                      "shot": "wide"})
    c, _ = login(app, tokens["lee"])
    assert "1 labels on 1 clips by 1 annotators" in c.get("/stats").text


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
    lead.post("/submit", data={"clip_id": ids[0], "csrf": csrf, "camera": "shake", "shot": "wide", "kind": "adjudication"})
    assert ids[0] not in lead.get("/disagreements").text


def test_kill_9_of_the_server_loses_no_acknowledged_submission(tmp_path):
    """`pks audit serve` in its own process; every submission it answered 200 to is in the
    database after SIGKILL."""
    import socket
    import subprocess
    import sys
    import time

    import httpx

    ids = make_run(tmp_path)
    token = Store(tmp_path).add_user("ann", "annotator")
    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        port = sk.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "pks.cli", "audit", "serve", str(tmp_path), "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                httpx.get(base + "/login")
                break
            except httpx.TransportError:
                time.sleep(0.1)
        c = httpx.Client(base_url=base)
        c.post("/login", data={"token": token})
        csrf = re.search(r'"X-CSRF-Token": "([^"]+)"', c.get("/").text).group(1)
        acked = 0
        for clip in ids:
            r = c.post("/submit", data={"clip_id": clip, "csrf": csrf, "camera": "static", "shot": "wide"})
            acked += r.status_code == 200
    finally:
        proc.kill()  # SIGKILL
        proc.wait()
    assert acked == len(ids)
    assert sorted(a.clip_id for a in Store(tmp_path).history()) == sorted(ids)
