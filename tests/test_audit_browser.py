"""The workbench in a real browser (Debian's Chromium driven by Playwright): log in, step
frames exactly, label a clip with the keyboard, see it saved, blind mode hides the model; the
agreement page's tables and bars and the clip page's camera in words, as a person sees them."""

import math
import os
import shutil
from pathlib import Path

import cv2
import pytest

from annotators.audit.queue import QueueConfig
from annotators.audit.store import Store
from annotators.audit.web import create_app
from audit_support import GREY0, GREY_STEP, caption, make_run, thread_server
from pks.decode import iter_decoded

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (make test installs it)")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def server(tmp_path):
    ids = make_run(
        tmp_path,
        n_clips=3,
        frames=24,
        narrative="a girl runs",
        camera=(
            ["pan_left"],
            {
                "pan_per_frame": 0.012,
                "tilt_per_frame": 0.001,
                "zoom_per_frame": 0.0,
                "roll_per_frame": 0.0,
                "jitter": 0.0005,
            },
        ),
    )
    token = Store(tmp_path).add_user("ann", "annotator")
    with thread_server(create_app(tmp_path, QueueConfig(overlap=1, gold_rate=0.0))) as url:
        yield tmp_path, ids, token, url


def shown_frame(page) -> tuple[int, int]:
    """(the frame number the page shows, the frame the video element actually presents,
    read from the grey level of its centre pixel)."""
    page.wait_for_function(
        "() => { const v = document.querySelector('video#clip'); return !v.seeking && v.readyState >= 2; }"
    )
    page.wait_for_timeout(150)  # let the frame callback run for the presented frame
    grey = page.evaluate("""() => {
        const v = document.querySelector('video#clip'), c = document.createElement('canvas');
        c.width = v.videoWidth; c.height = v.videoHeight;
        const g = c.getContext('2d'); g.drawImage(v, 0, 0);
        return g.getImageData(c.width >> 1, c.height >> 1, 1, 1).data[1]; }""")
    return int(page.inner_text("#frame")), round((grey - GREY0) / GREY_STEP)


def test_login_step_frames_label_with_keys(server):
    from playwright.sync_api import sync_playwright

    out, ids, token, url = server
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        page = browser.new_page()
        page.goto(url + "/")
        assert page.url.endswith("/login")
        page.fill("input[name=token]", token)
        page.click("button")
        page.wait_for_selector("video#clip")
        clip = page.get_attribute("input[name=clip_id]", "value")
        decoded = {
            i: int(f.to_ndarray(format="rgb24")[48, 64, 1])
            for i, f, _ in iter_decoded(str(out / "clips" / f"{clip}.mp4"))
        }
        assert "a girl runs" not in page.content()  # blind: the model caption is not on the page
        assert shown_frame(page) == (0, 0)
        for _ in range(7):
            page.keyboard.press(".")
        assert shown_frame(page) == (7, 7)
        page.keyboard.press(",")
        page.keyboard.press(",")
        label, presented = shown_frame(page)
        assert label == presented == 5
        assert round((decoded[5] - GREY0) / GREY_STEP) == 5  # PyAV agrees on frame 5...
        cap = cv2.VideoCapture(str(out / "clips" / f"{clip}.mp4"))
        cap.set(cv2.CAP_PROP_POS_FRAMES, 5)
        assert round((int(cap.read()[1][48, 64, 1]) - GREY0) / GREY_STEP) == 5  # ...and so does OpenCV
        page.keyboard.press("s")
        page.keyboard.press("l")
        assert page.evaluate(
            "() => { const v = document.querySelector('video#clip'); return [v.playbackRate, v.loop]; }"
        ) == [0.25, True]
        nxt_src = page.get_attribute("video.prefetch", "src")
        assert nxt_src.startswith("/media/") and not nxt_src.endswith(clip)  # the next clip is already loading
        for _ in range(30):  # past the end: stays on the last frame
            page.keyboard.press(".")
        assert shown_frame(page) == (23, 23)
        page.keyboard.press("e")  # camera axis
        page.keyboard.press("1")  # its first tag: static
        page.keyboard.press("Shift+Digit3")  # its 13th tag: shake
        page.keyboard.press("t")  # shot size
        page.keyboard.press("2")  # wide
        page.keyboard.press("Enter")
        page.wait_for_selector("#reveal")
        assert "a girl runs" in page.inner_text("#reveal")  # revealed after submitting
        nxt = page.get_attribute("input[name=clip_id]", "value")
        assert nxt != clip and page.url.endswith("/")  # the next clip, without a page load
        page.screenshot(path=str(Path(os.environ.get("PKS_SCREENSHOTS", out)) / "audit.png"), full_page=True)
        browser.close()
    saved = Store(out).latest()[clip]["ann"]
    assert saved.labels["camera"] == ["static", "shake"] and saved.labels["shot"] == "wide" and saved.mode == "blind"


def test_stats_tables_and_camera_words_as_seen(server):
    """/stats is tables with bars drawn to scale (a negative kappa left of the centre line) and
    the clip page says the camera in words; a screenshot of each."""
    from playwright.sync_api import sync_playwright

    out, ids, token, url = server
    shots = Path(os.environ.get("PKS_SCREENSHOTS", out))
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        page = browser.new_page()
        page.goto(url + "/login")
        page.fill("input[name=token]", token)
        page.click("button")
        page.wait_for_selector("video#clip")  # the clip page, loaded into the queue page by HTMX
        assert page.inner_text("#camera") == "pan left, 1.2% of the frame width per frame"
        page.screenshot(path=str(shots / "clip.png"), full_page=True)
        s = Store(out)  # now labels, which empty ann's queue
        s.add_user("bob", "annotator")
        ann, bob = (["static"], ["static", "shake"], ["pan_left"]), (["static"], ["static"], ["shake"])
        for k, clip in enumerate(ids):
            s.submit(clip, "ann", caption(camera=ann[k]))
            s.submit(clip, "bob", caption(camera=bob[k]))
        page.goto(url + "/stats")
        static = page.locator("#axis-camera tr[data-tag='camera/static']")
        assert static.locator("th").inner_text() == "static static"
        assert static.locator(".num").all_inner_texts()[:2] == ["1.000", "1.000"]  # kappa, alpha
        # shake: ann [0,1,0], bob [0,0,1] -> kappa -0.5: a red bar from the centre line leftwards
        shake = page.locator("#axis-camera tr[data-tag='camera/shake'] td.fig").first
        assert shake.locator(".num").inner_text() == "-0.500"
        track, fill = shake.locator(".track").bounding_box(), shake.locator(".fill").bounding_box()
        centre = track["x"] + track["width"] / 2
        assert math.isclose(fill["x"] + fill["width"], centre, abs_tol=1.5)
        assert math.isclose(fill["width"], track["width"] / 4, abs_tol=1.5)
        red = page.evaluate("() => getComputedStyle(document.querySelector('.fill.below')).backgroundColor")
        assert red == "rgb(204, 51, 51)"
        kappa_one = static.locator("td.fig .fill").first.bounding_box()  # kappa 1: centre to the right edge
        assert math.isclose(kappa_one["x"], centre, abs_tol=1.5)
        assert math.isclose(kappa_one["width"], track["width"] / 2, abs_tol=1.5)
        assert page.locator("#pairs tr", has_text="ann ~ bob").is_visible()
        page.screenshot(path=str(shots / "stats.png"), full_page=True)
        browser.close()
    for name in ("stats.png", "clip.png"):
        png = (shots / name).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000
