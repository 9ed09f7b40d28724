"""Frames the decoder could not give as coded (pks.decode.DecodeMarks): corrupt coded frames
concealed by FFmpeg are found from what the decoder reports, with no change between frames
needed, and every frame the comparison with the clean decode calls damaged is inside the span
they mark; a coded frame muxed twice is found from its bytes; the segmented path marks the
same frames as one pass over the video."""

import dataclasses

import av
import numpy as np
import pytest

from pipelines import segments
from pipelines.video import split
from pks.config import load_config
from pks.decode import decode_marks, decode_small
from pks.probe import probe
from pks.seek import frame_grid
from pks.synth import synthesize_video
from pks.synth.processes import corrupt_coded_frames, damage_truth, mux_drop_dup, noise_threshold


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """(clean, corrupt copy, truth of the copy): ~10 s of 320x176 24p footage, B-frames, cuts
    on keyframes; three coded (non-key) frames overwritten and left to FFmpeg's concealment."""
    d = tmp_path_factory.mktemp("decerr")
    clean = d / "clean.mp4"
    synth = synthesize_video(clean, 21, n_shots=5, size=(320, 176), fps="24", shot_frames=(40, 60), damage_p=0)
    bad = d / "bad.mp4"
    corrupt_coded_frames(clean, bad, np.random.default_rng(3), n=3)
    truth = damage_truth(clean, bad, noise_threshold(clean), shots=synth["shots"])
    assert truth["damaged_frames"] and truth["missing"] == []
    return clean, bad, truth


@pytest.fixture(scope="module")
def muxed(videos):
    """(copy, its recipe, truth): some coded frames left out, some muxed twice, timestamps
    rewritten to the constant rate."""
    clean = videos[0]
    out = clean.with_name("mux.mp4")
    recipe = mux_drop_dup(clean, out, np.random.default_rng(5), drops=2, dups=3)
    truth = damage_truth(clean, out, noise_threshold(clean), align="sequence")
    return out, recipe, truth


def test_concealed_frames_and_what_they_reach_are_marked(videos):
    clean, bad, truth = videos
    assert not decode_small(str(clean)).damaged.any()
    marked = decode_small(str(bad)).damaged
    assert len(marked) == truth["n_frames"]
    # every frame that differs visibly from the clean decode is marked: nothing needed a change
    # between frames (a concealed picture that persists is still found)
    assert set(truth["damaged_frames"]) <= set(np.flatnonzero(marked).tolist())
    # ... and the marks stop at keyframes: a frame after the last keyframe that follows every
    # damaged frame is clean and unmarked
    marks = _marks(bad)
    assert marks.concealed and not marks.filled  # concealed, not lost
    after = [k for k in marks.keys if k > max(truth["damaged_frames"])]
    assert after, "the seed must put a keyframe after the last damaged frame"
    assert not marked[after[0] :].any()
    # the marks are the decoder's spans, not the whole video
    assert marked.mean() < 0.6


def test_a_shot_holding_concealed_frames_is_flagged_decode_error(videos):
    clean, bad, truth = videos
    cfg = load_config()
    flagged = {
        (r.start_frame, r.end_frame) for r in split(probe(str(bad), "b" * 16), cfg) if "decode_error" in r.quality_flags
    }
    assert not any("decode_error" in r.quality_flags for r in split(probe(str(clean), "c" * 16), cfg))
    damaged = [s for s in truth["shots"] if s["damaged_frames"]]
    assert damaged
    for s in damaged:  # a clip holding a damaged shot's damaged frames carries the flag
        assert any(a <= f < b for a, b in flagged for f in s["damaged_frames"]), (s, flagged)


def test_segments_mark_what_one_pass_marks(videos):
    _, bad, _ = videos
    whole = decode_small(str(bad)).damaged
    n = len(whole)
    grid = frame_grid(str(bad))
    assert grid is not None and grid.n_frames == n
    sc = dataclasses.replace(load_config().split, overlap_s=0.5)
    for cores in (segments.plan_segments(n, 24.0, 1.1), segments.plan_segments(n, 24.0, 3.0)):
        results = [segments.detect_segment(str(bad), c, grid, 24.0, sc) for c in cores]
        _, got_n, damaged = segments.merge_segments(results)
        assert got_n == n and np.array_equal(damaged, whole), cores


def _marks(path):
    return decode_marks(str(path), fast=False)[0]


def test_frames_muxed_twice_or_lost_from_the_mux_are_marked_and_held_drawings_are_not(videos, muxed, tmp_path):
    clean, _, _ = videos
    path, recipe, truth = muxed
    marks = _marks(path)
    assert not marks.concealed and not marks.filled  # it decodes without a single error
    # the second copy of each repeated picture, found from the packet bytes alone (the picture
    # is identical to the one before it, as a held drawing is)
    assert len(marks.repeated) == len(recipe["dup"])
    small = decode_small(str(path))
    assert all(np.array_equal(small.rgb[i], small.rgb[i - 1]) for i in marks.repeated)
    # each lost picture, from the jump in picture order count: the frame shown after it (clean
    # frame d + 1, numbered in the copy after the drops and repeats before it)
    after = [d + 1 - sum(x <= d for x in recipe["drop"]) + sum(x <= d for x in recipe["dup"]) for d in recipe["drop"]]
    assert marks.after_gap == after
    # every damaged frame the comparison with the clean decode finds is marked
    assert set(truth["damaged_frames"]) <= set(marks.repeated + marks.after_gap)
    assert np.flatnonzero(small.damaged).tolist() == sorted(marks.repeated + marks.after_gap)
    # the same stream in MPEG-TS (Annex B start codes, parameter sets in band): the same marks
    ts = tmp_path / "mux.ts"
    with av.open(str(path)) as src, av.open(str(ts), "w") as dst:
        out = dst.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(video=0):
            if packet.dts is not None:
                packet.stream = out
                dst.mux(packet)
    again = _marks(ts)
    assert (again.repeated, again.after_gap) == (marks.repeated, marks.after_gap)
    # the clean video holds drawings (the same decoded picture twice in a row): nothing is marked
    rgb = decode_small(str(clean)).rgb.astype(np.int16)
    assert (np.abs(np.diff(rgb, axis=0)).max(axis=(1, 2, 3)) == 0).any()
    held = _marks(clean)
    assert not held.repeated and not held.after_gap and not held.watch.repeated


def test_a_long_still_hold_is_not_a_repeat(tmp_path):
    """x264 codes a still picture as all-skip pictures whose headers differ only in counts that
    wrap (pic_order_cnt_lsb every 32 frames here): pictures 32 apart code to the same bytes."""
    path = tmp_path / "hold.mp4"
    rng = np.random.default_rng(0)
    a, b = (rng.integers(0, 255, (176, 320, 3), dtype=np.uint8) for _ in range(2))
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=24)
        s.width, s.height, s.pix_fmt = 320, 176, "yuv420p"
        s.options = {"crf": "23", "preset": "veryfast"}
        for i in range(200):
            frame = av.VideoFrame.from_ndarray(b if 100 <= i < 150 else a, format="rgb24")
            frame.pts = i
            out.mux(s.encode(frame))
        out.mux(s.encode(None))
    marks = _marks(path)
    assert not (marks.repeated or marks.after_gap or marks.concealed or marks.filled)
    assert not decode_small(str(path)).damaged.any()
