"""Each failure augmentation does what it claims, measured by PKS's own analysis where a
measure exists."""

import cv2
import numpy as np

from annotators.signals import analyse
from test_signals import CFG, clip, render
from training.failures import FAILURES


def shot(**kw):
    return np.stack(render(**{**dict(cadence=2, n_frames=30, deformation=0.1, subject_speed=2.0), **kw}))


def test_frozen_and_block_noise_raise_pks_flags():
    clean = shot()
    assert not {"frozen", "block_corruption"} & set(
        analyse(clip(list(clean)), CFG.analyse, CFG.curriculum)["quality_flags"]
    )
    rng = np.random.default_rng(0)
    assert "frozen" in analyse(clip(list(FAILURES["frozen"](clean, rng))), CFG.analyse, CFG.curriculum)["quality_flags"]
    assert (
        "block_corruption"
        in analyse(clip(list(FAILURES["block_noise"](clean, rng))), CFG.analyse, CFG.curriculum)["quality_flags"]
    )


def test_melting_and_boiling_change_frames_the_drawing_holds():
    """A shot on 2s holds every other frame; melting and boiling move the picture on every
    frame and off the drawings' rhythm. (PKS's deformation score does not single out melting:
    telling it from drawn deformation is the Judge's job.)"""
    clean = shot()
    base = analyse(clip(list(clean)), CFG.analyse, CFG.curriculum)
    assert base["held_ratio"] > 0.4
    for name in ("melting", "boiling"):
        out = analyse(clip(list(FAILURES[name](clean, np.random.default_rng(1)))), CFG.analyse, CFG.curriculum)
        assert out["held_ratio"] < 0.3 * base["held_ratio"] and out["motion_score"] > 2 * base["motion_score"], name


def test_ghosting_blurs_tearing_slips_a_band_identity_drifts():
    clean = shot(subject_speed=6.0)
    rng = np.random.default_rng(2)

    def edges(f, where):  # edge energy where the subject moves
        return np.abs(cv2.Laplacian(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), cv2.CV_32F))[where].mean()

    ghost = FAILURES["ghosting"](clean, rng)
    moving = [(clean[i] != clean[i - 4]).any(-1) for i in range(5, len(clean))]
    assert np.mean([edges(ghost[i], m) for i, m in zip(range(5, len(clean)), moving)]) < 0.9 * np.mean(
        [edges(clean[i], m) for i, m in zip(range(5, len(clean)), moving)]
    )  # softer...
    assert (
        np.mean([np.abs(ghost[i].astype(int) - clean[i])[m].mean() for i, m in zip(range(5, len(clean)), moving)]) > 10
    )
    # ...and a trail: where the subject was, it has not quite gone
    torn = FAILURES["tearing"](clean, rng)
    hit = [i for i in range(len(clean)) if not np.array_equal(torn[i], clean[i])]
    assert hit
    for i in hit:
        rows = np.nonzero((torn[i] != clean[i]).any(axis=(1, 2)))[0]
        band = slice(rows.min(), rows.max() + 1)
        g = [np.float32(cv2.cvtColor(np.ascontiguousarray(x[band]), cv2.COLOR_RGB2GRAY)) for x in (clean[i], torn[i])]
        (dx, dy), _ = cv2.phaseCorrelate(*g)
        assert abs(dx) > 5 and abs(dy) < 1  # the band slid sideways, whole
        assert np.array_equal(torn[i, : band.start], clean[i, : band.start])  # the rest did not move
    drift = FAILURES["identity_drift"](clean, rng)
    assert np.abs(drift[0].astype(int) - clean[0]).mean() < 1.0
    assert np.abs(drift[-1].astype(int) - clean[-1]).mean() > 20


def test_augmentations_leave_the_input_alone():
    clean = shot(n_frames=12)
    before = clean.copy()
    for name, fn in FAILURES.items():
        out = fn(clean, np.random.default_rng(3))
        assert out.shape == clean.shape and out.dtype == np.uint8, name
    assert np.array_equal(clean, before)
