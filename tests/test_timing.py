"""Variable frame rate: clips keep the source's real timing (issue 22, item 5). Truth comes
from decoding the variable-rate file itself: each decoded frame's own timestamp says which frame
is on screen at any moment."""

import av
import numpy as np
import pytest

from badfiles import make_vfr
from pipelines.video import process_video
from pks.config import load_config
from pks.probe import probe
from pks.timing import constant_rate, frame_times, retime_note


@pytest.fixture(scope="module")
def vfr(tmp_path_factory, synth_videos):
    path = tmp_path_factory.mktemp("vfr") / "vfr.mp4"
    make_vfr(synth_videos[0][0], path)
    return path


def decoded(path):
    """[(seconds from the first frame, rgb int16)] in display order."""
    with av.open(str(path)) as c:
        got = [(float(f.time), f.to_ndarray(format="rgb24").astype(np.int16)) for f in c.decode(video=0)]
    return [(t - got[0][0], rgb) for t, rgb in got]


def test_constant_rate_repeats_long_frames_and_drops_short_ones():
    times = np.r_[0, np.cumsum(np.tile([3, 2, 2], 10))][:30] / 48  # 1/16 s, 1/24 s, 1/24 s, ...
    fps = 48 * 3 / 7  # their average rate
    shown = constant_rate(times, 0, 30, fps)
    assert len(shown) == 30  # 30 frames last 70/48 s: 30 ticks of 7/144 s
    # tick j shows the last frame that appeared at or before j / fps
    expect = [int(np.searchsorted(times, j / fps + 1e-9, side="right")) - 1 for j in range(30)]
    assert shown.tolist() == expect
    assert shown[:4].tolist() == [0, 0, 1, 3]  # the 1/16 s frame held over two ticks, frame 2 never shown
    # the same in each 7/48 s: three ticks over frames of 3, 2, 2 forty-eighths
    assert retime_note(shown, 0, 30, fps) == "30 frames at 20.571 fps from 30: 10 repeated, 10 dropped"
    # a span from the middle starts at its own first frame and ends where the next one appears
    assert constant_rate(times, 4, 10, fps)[0] == 4 and constant_rate(times, 4, 10, fps).max() <= 9


def test_a_variable_rate_source_is_cut_with_its_real_timing(vfr, tmp_path):
    info = probe(str(vfr))
    assert info.vfr and info.avg_fps == pytest.approx(48 * 3 / 7)
    (tmp_path / "clips").mkdir()
    records = process_video(str(vfr), "f" * 16, tmp_path, load_config(None, {"caption.captioner": "none"}))
    ok = [r for r in records if r.status == "ok"]
    assert len(ok) >= 2
    source = decoded(vfr)
    times = np.array([t for t, _ in source])
    assert np.allclose(frame_times(str(vfr)), times)
    for r in ok:
        # real timestamps, not frame / average rate (which is off by up to a third of a frame per frame)
        assert r.start_s == pytest.approx(times[r.start_frame])
        assert r.end_s == pytest.approx(times[r.end_frame] if r.end_frame < len(times) else times[-1] + 2 / 48)
        assert r.fps == pytest.approx(info.avg_fps) and r.retimed.startswith(f"{r.clip_frames} frames at 20.571 fps")
        clip = decoded(tmp_path / "clips" / f"{r.clip_id}.mp4")
        assert len(clip) == r.clip_frames == round((r.end_s - r.start_s) * r.fps)
        for j, (_, got) in enumerate(clip):
            on_screen = int(np.searchsorted(times, r.start_s + j / r.fps + 1e-6, side="right")) - 1
            # the clip's frame j is the source frame on screen at its tick: nearer to it than
            # to any other frame of the span (the clip is a lossy re-encode)
            err = {k: np.abs(got - source[k][1]).mean() for k in range(r.start_frame, r.end_frame)}
            assert min(err, key=err.get) == on_screen or err[on_screen] < 1.0, (r.clip_id, j)
            assert err[on_screen] < 4, (r.clip_id, j, err[on_screen])
        assert r.cadence is not None  # analysed on the same constant-rate frames


def test_a_constant_rate_source_is_not_retimed(synth_videos, tmp_path):
    path = synth_videos[0][0]
    (tmp_path / "clips").mkdir()
    records = process_video(str(path), "c" * 16, tmp_path, load_config(None, {"caption.captioner": "none"}))
    ok = [r for r in records if r.status == "ok"]
    assert ok and all(r.retimed == "" and r.clip_frames is None and r.frames_in_clip == r.n_frames for r in ok)
    assert all(r.start_s == pytest.approx(r.start_frame / r.fps) for r in ok)
