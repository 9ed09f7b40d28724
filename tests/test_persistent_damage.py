"""Damage that does not change from frame to frame, made by the real processes
(pks.synth.processes) and found from the pictures: a starved encode blocks every frame of a
shot, a telecined master combs wherever the picture moves. The truth is the comparison with
the clean decode, never the recipe; clean shots stay unflagged."""

import json

import pytest

from annotators.signals import QualityParams, analyse, load_clip
from pks.config import load_config
from pks.record import DEFECT_FLAGS
from pks.synth import synthesize_video
from pks.synth.processes import damage_truth, noise_threshold, starve, telecine

CFG = load_config()


@pytest.fixture(scope="module")
def footage(tmp_path_factory):
    """A short 320x176 24p video of three shots (cuts, so each shot starts on a keyframe), its
    starved and telecined copies, and each copy's truth by comparison with the clean decode."""
    d = tmp_path_factory.mktemp("persistent")
    clean = d / "clean.mp4"
    synth = synthesize_video(clean, 12, n_shots=3, size=(320, 176), fps="24", shot_frames=(30, 45), damage_p=0)
    calib = noise_threshold(clean)
    starve(clean, d / "starve.mp4")
    telecine(clean, d / "telecine.mp4", "bff")
    truth = {
        "starve": damage_truth(clean, d / "starve.mp4", calib, shots=synth["shots"]),
        "telecine": damage_truth(clean, d / "telecine.mp4", calib),
    }
    return d, synth, truth


def shots(path, synth, rate=1.0):
    """(shot, analysis) for each true shot of `path`; `rate` maps clean frame indices to the
    copy's (5/4 for a telecined copy). A frame is left off each end (the cut itself)."""
    video = load_clip(str(path), width=192)
    for s in synth["shots"]:
        a, b = int(round(s["start_frame"] * rate)) + 1, int(s["end_frame"] * rate) - 1
        yield (a, b), analyse(video.span(a, b), CFG.analyse, CFG.curriculum)


def defects(out):
    return set(out["quality_flags"]) & set(DEFECT_FLAGS)


def test_clean_shots_are_not_flagged(footage):
    d, synth, _ = footage
    for _, out in shots(d / "clean.mp4", synth):
        assert not defects(out), out["quality_flags"]


def test_a_starved_encode_is_block_corruption_in_every_shot(footage):
    """Starvation blocks every frame alike: no burst over the clip's own level (the old test
    needed one), but faint steps between flat runs on the block grid, frame after frame."""
    d, synth, truth = footage
    damaged = {s["index"] for s in truth["starve"]["shots"] if s["damaged"]}
    assert damaged == {s["index"] for s in synth["shots"]}  # the truth: every shot differs visibly
    for (a, b), out in shots(d / "starve.mp4", synth):
        q = json.loads(out["signals"])["quality"]
        assert "block_corruption" in out["quality_flags"], (a, b, q)
        assert q["block_steps"] > QualityParams().block_steady


def test_a_telecined_master_combs_in_every_shot_that_moves(footage):
    """2:3 pulldown woven without deinterlacing: frames of two film instants comb where the
    picture moves, in every shot the truth finds damaged frames in."""
    d, synth, truth = footage
    bad = set(truth["telecine"]["damaged_frames"])
    for (a, b), out in shots(d / "telecine.mp4", synth, 5 / 4):
        if any(a <= k < b for k in bad):
            assert "interlaced" in out["quality_flags"], (a, b, json.loads(out["signals"])["quality"])
