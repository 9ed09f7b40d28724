"""The third footage family, "limited" (evaluation only): deterministic, its truth matches its
frames (checked by pixels and phase correlation, never by the project's analysers), it decodes,
the real damage processes work on it, and adding it left the other families' truth unchanged."""

import hashlib
import json
import subprocess
import sys

import av
import cv2
import numpy as np
import pytest

from pks.synth import limited, synthesize_video
from pks.synth.limited import LimitedSpec, random_design, render_shot
from pks.synth.processes import make_damaged
from pks.synth.shot import CAMERAS
from pks.synth.video import EVALUATION_ONLY


def decode(path):
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


@pytest.fixture(scope="module")
def limited_video(tmp_path_factory):
    """A short video of the family: a cut, a dissolve, a fade and a card between five shots."""
    path = tmp_path_factory.mktemp("limited") / "lim.mp4"
    truth = synthesize_video(path, 8, family="limited", n_shots=5, size=(320, 180), shot_frames=(30, 45))
    return path, truth


def spec(**kw):
    base = dict(
        n_frames=24,
        camera="static",
        camera_speed=0.0,
        camera_cadence=1,
        cadence=2,
        deformation=0.5,
        subject_speed=0.0,
        subject_height=0.35,
        plate="town",
        location=3,
        seed=11,
    )
    return LimitedSpec(**{**base, **kw})


def render(s, size=(320, 180), grain=0.0):
    gen = render_shot(s, size, random_design(np.random.default_rng(5)), grain)
    frames = []
    while True:
        try:
            frames.append(next(gen))
        except StopIteration as stop:
            return frames, stop.value


def rendered(seed, size=(160, 90)):
    """sha256 of every frame the family renders for a seed (before the encoder)."""
    rng = np.random.default_rng(seed)
    fmt = {**limited.choose_format(rng), "size": size}
    _, shots = limited.render_video(rng, fmt, 3, (24, 30), 0.18, 0.35)
    h = hashlib.sha256()
    for frames, _ in shots:
        for f in frames:
            h.update(f.tobytes())
    return h.hexdigest()


def test_same_seed_same_truth_and_frames(limited_video, tmp_path):
    """The same seed gives the same truth bytes and the same rendered frames. (x264 itself was
    seen coding identical frames into different bytes on a second call in one process, for
    every family, so the encoded files are compared by their decoded frames, closely.)"""
    path, truth = limited_video
    again = tmp_path / "lim.mp4"
    synthesize_video(again, 8, family="limited", n_shots=5, size=(320, 180), shot_frames=(30, 45))
    assert again.with_suffix(".json").read_bytes() == path.with_suffix(".json").read_bytes()
    assert rendered(4) == rendered(4) != rendered(5)
    a, b = decode(path), decode(again)
    assert len(a) == len(b) == truth["n_frames"] and np.abs(a.astype(np.int16) - b).mean() < 1.0


def test_truth_schema_and_evaluation_only_mark(limited_video):
    _, t = limited_video
    assert t["family"] == "limited" and t["evaluation_only"] is True and "limited" in EVALUATION_ONLY
    shots = t["shots"]
    assert shots[0]["start_frame"] == 0 and shots[-1]["end_frame"] == t["n_frames"]
    assert [b["frame"] for b in t["boundaries"]] == [s["start_frame"] for s in shots[1:]]
    for b, s in zip(t["boundaries"], shots[1:]):
        assert b["type"] == s["transition_in"] and b["span"][0] <= b["frame"] < b["span"][1]
    for s in shots:
        assert s["camera"] in CAMERAS and s["cadence"] in limited.CADENCE_P and 0 <= s["deformation"] <= 1
        assert s["camera_tags"][0] == s["camera"] and set(s["camera_tags"]) <= set(CAMERAS)
        assert s["failures"] == [] and len(s["camera_path"]["x"]) == s["spec"]["n_frames"]
        for f in s["flashes"]:  # impact frames 1-4 long, inside the shot, clear of transitions
            assert 1 <= f["length"] <= 4 and s["start_frame"] < f["frame"] and f["frame"] + f["length"] < s["end_frame"]
        # Video frame numbers: the shot's frame 0 is its first drawing; under a dissolve a shot's
        # frames run up to 16 frames (the longest dissolve) beyond its boundary.
        starts = s["drawing_starts"]
        assert starts == sorted(starts) and s["start_frame"] - 16 <= starts[0] and starts[-1] < s["end_frame"] + 16
        if s["transition_in"] != "dissolve":
            assert starts[0] == s["start_frame"]
        for a, b in s["holds"]:  # nothing new is drawn inside a hold
            assert not any(a <= x < b for x in starts)


def test_camera_speeds_reach_a_real_slow_pan():
    """Pans run from 0.5 px a frame on a 1920 px frame upward; the taxonomy's camera tags all occur."""
    rng = np.random.default_rng(0)
    specs = [limited.plan_shot(rng, 80, 640, 360, 0.35, int(rng.integers(99))) for _ in range(400)]
    pans = [s.camera_speed / 640 for s in specs if s.camera.startswith("pan")]
    assert min(pans) < 2 * limited.SLOWEST_PAN and max(pans) > 0.5 * limited.FASTEST_PAN
    assert {s.camera for s in specs} == set(CAMERAS)
    assert {s.cadence for s in specs} == set(limited.CADENCE_P)
    assert {s.camera_cadence for s in specs if s.camera.startswith("pan")} == {1, 2}
    zooms = [s for s in specs if s.camera.startswith("zoom")]
    assert 0.1 < np.mean([s.pan != 0 for s in zooms]) < 0.5  # some zooms have a pan beside them
    assert not any(s.pan for s in specs if not s.camera.startswith("zoom"))


def test_a_static_shot_changes_only_where_the_truth_says():
    """Without grain, a static camera: a frame differs from the one before exactly at a new body
    drawing, a mouth change or a blink, and only inside the character's boxes."""
    for talking, cadence in ((False, 3), (True, 2)):
        s = spec(n_frames=48, cadence=cadence, talking=talking, holds=[[12, 40]], mouth_cadence=2, deformation=0.3)
        frames, tr = render(s)
        events = set(tr.drawing_starts) | set(tr.mouth_frames) | set(tr.blink_frames)
        assert not any(12 < d < 40 for d in tr.drawing_starts)  # the body holds through the hold
        assert talking == bool(tr.mouth_frames)
        for i in range(1, len(frames)):
            diff = np.abs(frames[i].astype(int) - frames[i - 1]).max(axis=2) > 0
            assert diff.any() == (i in events), (talking, i)
            if diff.any():
                inside = np.zeros_like(diff)
                for box in (tr.boxes[i], tr.boxes[i - 1]):
                    x0, y0, x1, y1 = box
                    inside[y0:y1, x0:x1] = True
                assert not (diff & ~inside).any(), (talking, i)


def shift(a, b):
    ga, gb = (cv2.cvtColor(x, cv2.COLOR_RGB2GRAY).astype(np.float64) for x in (a, b))
    win = cv2.createHanningWindow(ga.shape[::-1], cv2.CV_64F)
    (dx, dy), _ = cv2.phaseCorrelate(ga, gb, win)
    return dx, dy


@pytest.mark.parametrize(
    "camera,speed,step,axis,sign",
    [("pan_right", 0.5, 1, 0, -1), ("pan_left", 2.5, 2, 0, 1), ("tilt_down", 0.5, 1, 1, -1), ("tilt_up", 1.5, 1, 1, 1)],
)
def test_the_plate_moves_by_the_truth_speed(camera, speed, step, axis, sign):
    """Phase correlation of the plate (the top rows, above the character) between frame 0 and
    frame k gives the truth's speed times k, stepped on twos when the camera is. The k are those
    with a whole-pixel move: both frames then carry the same sub-pixel resampling."""
    s = spec(n_frames=21, camera=camera, camera_speed=speed, camera_cadence=step, cadence=3, subject_height=0.3)
    frames, tr = render(s, size=(320, 180))
    top = [f[:48] for f in frames]
    for k in (2, 3, 4, 10, 20) if step == 2 else (2, 4, 10, 20):
        expect = speed * (k - k % step)
        if expect > 16:  # a third of the 48-row band: beyond it too little overlaps to correlate
            continue
        got = shift(top[0], top[k])[axis]
        # Phase correlation reads a large move short as less of the band overlaps: 4% of it.
        assert got == pytest.approx(sign * expect, abs=0.15 + 0.04 * expect), (k, got)
        path = tr.camera[axis][k] - tr.camera[axis][0]
        assert path == pytest.approx(-sign * expect, abs=1e-6)


@pytest.mark.parametrize("camera,pan", [("zoom_in", 0.0), ("zoom_out", 0.0), ("zoom_in", 1.5), ("zoom_out", -0.8)])
def test_a_zoom_follows_the_truth_camera_path(camera, pan):
    """Frame k is frame 0 scaled by the truth's scale ratio about the truth's zoom centre and
    moved by the truth's path (a pan beside the zoom included): predicted from frame 0 that way
    it matches far better than frame 0 itself does."""
    s = spec(n_frames=20, camera=camera, camera_speed=0.3, zoom_centre=(0.4, 0.6), subject_height=0.3, pan=pan)
    frames, tr = render(s)
    cx, cy, cs = tr.camera
    h, w = frames[0].shape[:2]
    k = 19
    r = cs[k] / cs[0]
    assert r == pytest.approx(np.exp(0.3 if camera == "zoom_in" else -0.3), rel=1e-3)
    # screen u_k = r (u_0 - w/2) + s_k (x_0 - x_k) + w/2, likewise for v
    M = np.array(
        [[r, 0, w / 2 * (1 - r) + cs[k] * (cx[0] - cx[k])], [0, r, h / 2 * (1 - r) + cs[k] * (cy[0] - cy[k])]],
        np.float32,
    )
    # Predict the narrower view's picture from the wider one's, so the band has content.
    src, dst = (frames[0], frames[k]) if r > 1 else (frames[k], frames[0])
    pred = cv2.warpAffine(src, M if r > 1 else cv2.invertAffineTransform(M), (w, h))
    band = (slice(4, 40), slice(int(w * 0.25), int(w * 0.75)))  # above the character, inside both views
    err_truth = np.abs(pred[band].astype(int) - dst[band]).mean()
    err_still = np.abs(src[band].astype(int) - dst[band]).mean()
    assert err_truth < 0.35 * err_still, (err_truth, err_still)
    if pan:  # the drift is the truth's pan speed, beside the zoom
        drift = (cx[k] - cx[0]) - (0.4 - 0.5) * w * (1 / cs[0] - 1 / cs[k])
        assert drift == pytest.approx(pan * k, rel=1e-6)


def test_impact_frames_and_cuts_are_visible(limited_video):
    path, t = limited_video
    frames = decode(path).astype(int)
    step = [np.abs(frames[i] - frames[i - 1]).mean() for i in range(1, len(frames))]
    within = np.median(step)
    for b in t["boundaries"]:
        if b["type"] == "cut":  # a hard cut changes the picture far more than the shot's own motion
            assert step[b["frame"] - 1] > max(8.0, 3 * within), b
        elif b["type"] == "fade":  # the frame before the next shot is (nearly) the fade's colour
            colour = 255 if b["colour"] == "white" else 0
            assert abs(frames[b["frame"] - 1].mean() - colour) < 40, b
        elif b["type"] == "card":  # black or a title on near-black between the shots
            assert frames[b["frame"] - 1].mean() < 30, b
    assert {b["type"] for b in t["boundaries"]} == {"cut", "fade", "dissolve", "card"}
    s = spec(n_frames=40, camera="shake", camera_speed=4.0, flashes=[{"frame": 18, "length": 4, "kind": "white"}])
    for kind in ("white", "invert", "duotone", "silhouette"):
        s.flashes = [{"frame": 18, "length": 4, "kind": kind}]
        fr, _ = render(s)
        for i in range(18, 22):
            assert np.abs(fr[i].astype(int) - fr[17]).mean() > 40, (kind, i)
        assert np.abs(fr[22].astype(int) - fr[17]).mean() < 40


def test_layers_are_drawn_and_grain_varies_each_frame():
    plain, _ = render(spec(n_frames=6))
    grained, _ = render(spec(n_frames=6), grain=3.0)
    assert 1.5 < np.abs(grained[3].astype(int) - plain[3]).mean() < 4.0
    assert (grained[4] != grained[3]).mean() > 0.5  # grain moves even where the drawing holds
    for layer in ("scan_lines", "screen_tone", "hatching"):
        fr, tr = render(spec(n_frames=6, layers=[layer]))
        assert np.abs(fr[1].astype(int) - plain[1]).mean() > 2, layer
        assert layer in tr.layer_params
    fr, _ = render(spec(n_frames=6, layers=["scan_lines"]))
    assert np.array_equal(fr[1], fr[2]) == np.array_equal(plain[1], plain[2])  # fixed on the glass


def test_old_families_truth_is_unchanged(tmp_path):
    """sha256 of the cel and painted truth for fixed seeds, as main made them before this family."""
    expect = {
        ("cel", 3): "ef7d68f198898aa5a7ab1a49cf411d52a3ca1b28ffb4fa9fea8d7558d5c34740",
        ("painted", 7): "f73e646e58ad7486d5d3112546166854f7d07e18155cb805bc5af425170f8db6",
    }
    for (family, seed), digest in expect.items():
        d = tmp_path / family
        d.mkdir()
        synthesize_video(
            d / "v.mp4", seed, n_shots=4, size=(160, 90), shot_frames=(20, 30), damage_p=0.5, family=family
        )
        assert hashlib.sha256((d / "v.json").read_bytes()).hexdigest() == digest, family


def test_cli_makes_the_family(tmp_path):
    out = tmp_path / "x"
    cmd = [sys.executable, "-m", "pks.cli", "synth", str(out), "--videos", "1", "--shots", "2"]
    r = subprocess.run(cmd + ["--size", "160x96", "--seed", "2", "--family", "limited"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    clean = out / "limited_2_000.mp4"
    synth = json.loads(clean.with_suffix(".json").read_text())
    assert synth["family"] == "limited" and len(decode(clean)) == synth["n_frames"] > 0


def test_every_real_damage_process_works_on_the_family(tmp_path):
    """make_damaged (what --damage-process runs) on this family's footage: each copy decodes,
    its truth follows the synth truth's shots; corruption and telecine combing show."""
    clean = tmp_path / "lim.mp4"
    synth = synthesize_video(clean, 2, family="limited", n_shots=3, size=(160, 96), fps="24", shot_frames=(24, 32))
    made = {p.name.split(".")[1]: p for p in make_damaged(clean)}
    assert set(made) == {"corrupt", "telecine_tff", "telecine_bff", "starve", "mux"}
    for tag, dam in made.items():
        t = json.loads(dam.with_suffix(".json").read_text())
        assert len(decode(dam)) == t["n_frames"], tag
        assert [s["index"] for s in t["shots"]] == [s["index"] for s in synth["shots"]], tag
        if tag in ("corrupt", "telecine_tff", "telecine_bff"):
            assert t["damaged_frames"], tag
        elif tag == "mux":  # frames were dropped and repeated; in held drawings that shows nothing,
            assert t["params"]["drop"] and t["params"]["dup"]  # and the truth rightly may list none


def test_deformation_level_scales_the_drawings_and_smears_widen_them():
    """The same shot at deformation 0, 0.3 and 0.65: a rigid character keeps its height from
    drawing to drawing (poses move arms and legs), squash-and-stretch varies it in proportion
    to the level; the truth's smear frames are the widest."""

    def heights(d):
        _, tr = render(spec(n_frames=48, cadence=2, deformation=d, subject_height=0.6, seed=21))
        plain = [i for i in tr.drawing_starts if i not in tr.smear_frames]
        return np.std(np.log([tr.boxes[i][3] - tr.boxes[i][1] for i in plain])), tr

    (rigid, tr0), (mild, _), (strong, tr1) = heights(0.0), heights(0.3), heights(0.65)
    assert rigid < 0.02 and 0.05 < mild < strong and strong > 1.5 * mild
    assert not tr0.smear_frames and tr1.smear_frames
    width = {i: tr1.boxes[i][2] - tr1.boxes[i][0] for i in tr1.drawing_starts}
    smeared = [width[i] for i in tr1.drawing_starts if i in tr1.smear_frames]
    assert min(smeared) > np.median([width[i] for i in tr1.drawing_starts if i not in tr1.smear_frames])
