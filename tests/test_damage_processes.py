"""Damage by real failure processes (pks.synth.processes): each process changes the frames the
way it claims, and the truth found by comparing decodes matches the frames."""

import json

import av
import numpy as np
import pytest

from pks.synth import synthesize_video
from pks.synth.processes import (
    corrupt_coded_frames,
    damage_truth,
    disposable_frames,
    mux_drop_dup,
    noise_threshold,
    reencode,
    starve,
    telecine,
)


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """(path, synth truth, calibrated threshold) of a short 320x176 24p video: three shots
    joined by cuts (keyframes), panned and shaken cameras."""
    d = tmp_path_factory.mktemp("processes")
    path = d / "clean.mp4"
    truth = synthesize_video(path, 12, n_shots=3, size=(320, 176), fps="24", shot_frames=(30, 45), damage_p=0)
    return path, truth, noise_threshold(path)


def lumas(path):
    """Every decoded frame's luma (int16), in display order."""
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="gray").astype(np.int16) for f in c.decode(video=0)]


def worst_block(a, b):
    """Largest mean |difference| over 16x16 blocks (frame sides are multiples of 16 here)."""
    h, w = a.shape
    return float(np.abs(a - b).reshape(h // 16, 16, w // 16, 16).mean(axis=(1, 3)).max())


def packets(path):
    """[(display index, keyframe)] in decode order."""
    with av.open(str(path)) as c:
        ps = [(p.pts, p.is_keyframe) for p in c.demux(video=0) if p.size]
    display = {pts: k for k, pts in enumerate(sorted(p for p, _ in ps))}
    return [(display[p], key) for p, key in ps]


def test_a_normal_reencode_is_not_damage(clean, tmp_path):
    path, _, calib = clean
    assert calib["value"] >= 8 and calib["value"] >= 2 * calib["noise_max"] - 0.01
    for crf in (18, 28):  # better and worse than the calibration's crf 23
        reencode(path, tmp_path / f"re{crf}.mp4", crf=crf)
        t = damage_truth(path, tmp_path / f"re{crf}.mp4", calib)
        assert t["damaged_frames"] == [] and t["missing"] == [], (crf, max(t["scores"]))
        assert max(t["scores"]) > 0  # the re-encode did change the pixels


def test_corrupted_coded_frames_are_concealed_and_persist_until_a_keyframe(clean, tmp_path):
    path, synth, calib = clean
    bad = tmp_path / "corrupt.mp4"
    p = corrupt_coded_frames(path, bad, np.random.default_rng(0), n=2)
    t = damage_truth(path, bad, calib, shots=synth["shots"])
    a, b = lumas(path), lumas(bad)
    order = packets(path)
    decode_pos = {k: i for i, (k, _) in enumerate(order)}
    keys = sorted(k for k, key in order if key)
    hit = p["frames"]
    # concealed, not dropped: every frame is there
    assert len(b) == len(a) == t["n_frames"] and t["missing"] == []
    assert [order[i][0] for i in p["decode_order"]] == hit and not any(order[i][1] for i in p["decode_order"])
    flagged = set(t["damaged_frames"])
    # the truth matches the frames (block differences computed here, independently)
    for k in range(len(a)):
        assert (worst_block(a[k], b[k]) > calib["value"]) == (k in flagged), k
    # frames decoded before the first corrupt packet are untouched
    first = min(p["decode_order"])
    for k, _ in order[:first]:
        assert np.array_equal(a[k], b[k]) and k not in flagged
    # each corrupt frame is damaged, the damage persists through the frames predicted from it
    assert set(hit) <= flagged and len(flagged) > 2 * len(hit)
    # ... and ends at the next keyframe: every damaged frame is decoded after a corrupt packet
    # with no keyframe between them in display order
    for k in flagged:
        assert any(decode_pos[k] >= decode_pos[c] and not any(c < key <= k for key in keys) for c in hit), k
    assert not flagged & set(keys)  # a keyframe predicts from nothing
    after = [(c, min(key for key in keys if key > c)) for c in hit if any(key > c for key in keys)]
    assert after, "the seed must put a keyframe after a corrupt frame"
    c, key = after[0]
    later = [h for h in hit if h > c]
    assert c in flagged and not flagged & set(range(key, (later[0] - 3) if later else len(a)))
    # the shots the truth names are the ones holding damaged frames
    for s in t["shots"]:
        assert s["damaged_frames"] == sorted(k for k in flagged if s["start_frame"] <= k < s["end_frame"])
    assert t["damaged_shots"] == [s["index"] for s in t["shots"] if s["damaged_frames"]]


def pulldown_sources(n):
    """For each telecined frame, the clean frames its (first, second) fields came from (2:3)."""
    fields = [k for k in range(n) for _ in range(2 if k % 2 == 0 else 3)]
    return [(fields[2 * m], fields[2 * m + 1]) for m in range(len(fields) // 2)]


def combing(y):
    """Mean |row - mean of the rows above and below|: high where fields of different instants
    are woven."""
    y = y.astype(np.float32)
    return float(np.abs(y[1:-1] - (y[:-2] + y[2:]) / 2).mean())


def test_telecine_weaves_fields_into_combing_and_both_field_orders(clean, tmp_path):
    path, _, calib = clean
    a = lumas(path)
    src = pulldown_sources(len(a))
    out = {}
    for order in ("tff", "bff"):
        p = telecine(path, tmp_path / f"{order}.mp4", order)
        with av.open(str(tmp_path / f"{order}.mp4")) as c:
            s = c.streams.video[0]
            assert s.average_rate == 30 and all(f.interlaced_frame for f in c.decode(s))
        out[order] = (lumas(tmp_path / f"{order}.mp4"), damage_truth(path, tmp_path / f"{order}.mp4", calib))
        assert p["frames"] == len(src) == len(out[order][0]) == out[order][1]["n_frames"]
    mixed = [m for m, (x, y) in enumerate(src) if x != y]
    # half a woven block's rows come from the other instant: it differs from either source by
    # about half of what the sources differ by, so "moving" here is well above twice the threshold
    moving = [m for m in mixed if worst_block(a[src[m][0]], a[src[m][1]]) > 3 * calib["value"]]
    assert len(moving) > len(mixed) / 3
    clean_comb = max(combing(y) for y in a)
    for order, (frames, t) in out.items():
        flagged = set(t["damaged_frames"])
        # a woven frame of two different instants combs where the picture moves ...
        for m in moving:
            assert combing(frames[m]) > 1.5 * max(combing(a[k]) for k in src[m]), (order, m)
            assert m in flagged, (order, m)
        # ... and a frame whose two fields are one picture does not, nor does the truth flag it
        assert not flagged - set(mixed), order
        assert max(combing(frames[m]) for m in range(len(src)) if m not in mixed) < 1.2 * clean_comb
        assert t["missing"] == []
    # the field orders weave the other way round: moving mixed frames differ, the rest match
    tff, bff = out["tff"][0], out["bff"][0]
    assert all(worst_block(tff[m], bff[m]) > calib["value"] for m in moving)
    assert all(worst_block(tff[m], bff[m]) < calib["value"] for m in range(len(src)) if m not in mixed)
    # per field order, the frame content really is the first field's frame on its rows
    m = moving[0]
    top = lambda k: a[k][0::2]  # noqa: E731
    assert np.abs(tff[m][0::2] - top(src[m][0])).mean() < np.abs(tff[m][0::2] - top(src[m][1])).mean()
    assert np.abs(bff[m][0::2] - top(src[m][1])).mean() < np.abs(bff[m][0::2] - top(src[m][0])).mean()


def grid_energy(y):
    """Mean |horizontal and vertical step| across the 8x8 block grid over the mean step inside
    blocks: 1 when the grid is invisible, higher when blocks show."""
    dx, dy = np.abs(np.diff(y, axis=1)), np.abs(np.diff(y, axis=0))
    on = np.r_[dx[:, 7::8].ravel(), dy[7::8].ravel()].mean()
    off = np.r_[np.delete(dx, np.s_[7::8], axis=1).ravel(), np.delete(dy, np.s_[7::8], axis=0).ravel()].mean()
    return float(on / max(off, 1e-6))


def test_starvation_blocks_and_the_truth_flags_it(clean, tmp_path):
    path, synth, calib = clean
    bad = tmp_path / "starved.mp4"
    p = starve(path, bad)
    assert p["bitrate"] <= 20000  # 40 kbps at 640x360 scaled to 320x176
    a, b = lumas(path), lumas(bad)
    assert len(a) == len(b)
    ga, gb = np.array([grid_energy(y) for y in a]), np.array([grid_energy(y) for y in b])
    assert np.median(gb) > 1.5 * np.median(ga), (np.median(ga), np.median(gb))
    t = damage_truth(path, bad, calib, shots=synth["shots"])
    flagged = set(t["damaged_frames"])
    for k in range(len(a)):
        assert (worst_block(a[k], b[k]) > calib["value"]) == (k in flagged), k
    assert len(flagged) > 0.8 * len(a) and t["damaged_shots"] == [s["index"] for s in synth["shots"]]


def test_mux_drops_and_repeats_frames_and_the_truth_finds_them(clean, tmp_path):
    path, synth, calib = clean
    a = lumas(path)
    change = [0.0] + [worst_block(x, y) for x, y in zip(a, a[1:])]
    # disposable frames where the clean moves on visibly at both sides, apart from each other
    moving = [
        k
        for k in disposable_frames(path)
        if 3 < k < len(a) - 3 and change[k] > calib["value"] and change[k + 1] > calib["value"]
    ]
    picks = [moving[0]]
    for k in moving:
        if k - picks[-1] >= 8:
            picks.append(k)
    assert len(picks) >= 4
    drop, dup = [picks[0], picks[2]], [picks[1], picks[3]]
    bad = tmp_path / "mux.mp4"
    assert mux_drop_dup(path, bad, None, drop=drop, dup=dup) == {"drop": drop, "dup": dup}
    b = lumas(bad)
    assert len(b) == len(a) - len(drop) + len(dup)
    with av.open(str(bad)) as c:  # a constant clock: the gaps and repeats are in the pictures only
        pts = sorted(f.pts for f in c.decode(video=0))
    assert len(set(np.diff(pts))) == 1
    t = damage_truth(path, bad, calib, align="sequence", shots=synth["shots"])
    assert [m["frame"] for m in t["missing"]] == drop and all(m["visible"] for m in t["missing"])
    assert [h["source_frame"] for h in t["held"]] == dup and all(h["visible"] for h in t["held"])
    # the frames shown are the clean's, in order, without the dropped and with the repeated
    expected = [k for k in range(len(a)) if k not in drop for _ in range(2 if k in dup else 1)]
    assert t["source_frames"] == expected
    assert all(np.array_equal(b[j], a[k]) for j, k in enumerate(expected))
    # damaged: each second showing of a repeated frame, and the frame that jumps over a dropped one
    held_at = [h["frame"] for h in t["held"]]
    jumps = [j for j in range(1, len(expected)) if expected[j] - expected[j - 1] == 2]
    assert sorted(held_at + jumps) == t["damaged_frames"]
    # a drawn recipe is not needed: random picks are found the same way
    p = mux_drop_dup(path, tmp_path / "mux2.mp4", np.random.default_rng(5), drops=1, dups=1)
    t2 = damage_truth(path, tmp_path / "mux2.mp4", calib, align="sequence")
    assert t2["n_frames"] == len(a)
    assert [m["frame"] for m in t2["missing"]] == p["drop"] and [h["source_frame"] for h in t2["held"]] == p["dup"]


def pks(*args):
    from typer.testing import CliRunner

    from pks.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def test_pks_synth_writes_damaged_copies_with_truth(tmp_path):
    r = pks(
        "synth",
        tmp_path,
        "--videos",
        "1",
        "--seed",
        "4",
        "--shots",
        "2",
        "--size",
        "320x176",
        "--fps",
        "24",
        "--damage-process",
        "corrupt,mux",
    )
    assert r.exit_code == 0, r.output
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [
        "anime_4_000.corrupt.json",
        "anime_4_000.corrupt.mp4",
        "anime_4_000.json",
        "anime_4_000.mp4",
        "anime_4_000.mux.json",
        "anime_4_000.mux.mp4",
    ], names
    synth = json.loads((tmp_path / "anime_4_000.json").read_text())
    for proc, align in (("corrupt", "time"), ("mux", "sequence")):
        t = json.loads((tmp_path / f"anime_4_000.{proc}.json").read_text())
        assert t["process"] == proc and t["align"] == align and t["clean"] == "anime_4_000.mp4" and t["params"]
        assert t["damaged_frames"] and t["damaged_shots"]
        assert t["threshold"]["value"] >= 8 and "re-encode" in t["threshold"]["derivation"]
        assert [(s["start_frame"], s["end_frame"]) for s in t["shots"]] == [
            (s["start_frame"], s["end_frame"]) for s in synth["shots"]
        ]
        assert f"anime_4_000.{proc}.mp4" in r.stdout
        # the truth is the comparison: the same decode gives the same frames
        again = damage_truth(
            tmp_path / "anime_4_000.mp4", tmp_path / f"anime_4_000.{proc}.mp4", t["threshold"], align=align
        )
        assert again["damaged_frames"] == t["damaged_frames"]


@pytest.mark.parametrize("value", ["corrupt,blur", ",", "telecine;starve"])
def test_a_bad_damage_process_is_one_line(value, tmp_path):
    r = pks("synth", tmp_path / "out", "--videos", "1", "--damage-process", value)
    assert r.exit_code == 2 and "--damage-process" in r.stderr and value in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
