"""Real decoder damage: packets the decoder rejects cost only the frames they lose, in the
decode that numbers frames (pks.decode.iter_decoded) and in the clips cut from it."""

import numpy as np
import pytest

from badfiles import corrupt_packets
from pipelines.video import process_video
from pks.config import load_config
from pks.decode import iter_decoded


@pytest.fixture(scope="module")
def damaged(tmp_path_factory, synth_videos):
    """(clean source, the same packets with three non-key ones corrupted)."""
    src = synth_videos[0][0]
    bad = tmp_path_factory.mktemp("damaged") / "bad.mp4"
    corrupt_packets(src, bad)
    return src, bad


def test_a_corrupt_packet_costs_only_the_frames_it_loses(damaged):
    src, bad = damaged
    clean = [f.pts for _, f, _ in iter_decoded(str(src))]
    got = [(f.pts, filled) for _, f, filled in iter_decoded(str(bad))]
    lost = set(clean) - {pts for pts, filled in got if not filled}
    assert lost, "the corrupt packets must really fail to decode"
    # Every position is there, each lost frame filled at its own position, every other frame at its own.
    assert len(got) == len(clean)
    assert {clean[i] for i, (_, filled) in enumerate(got) if filled} == lost
    assert all(pts == clean[i] for i, (pts, filled) in enumerate(got) if not filled)


def rgb(path):
    return [f.to_ndarray(format="rgb24").astype(np.int16) for _, f, _ in iter_decoded(str(path))]


def test_clips_after_a_corrupt_packet_hold_the_sources_frames(damaged, tmp_path):
    _, bad = damaged
    (tmp_path / "clips").mkdir()
    cfg = load_config(None, {"caption.captioner": "none"})
    records = process_video(str(bad), "b" * 16, tmp_path, cfg)
    source = rgb(bad)  # the decode that skips what it cannot decode
    ok = [r for r in records if r.status == "ok"]
    assert len(ok) >= 3 and any(r.start_frame > len(source) // 2 for r in ok)
    for r in ok:
        clip = rgb(tmp_path / "clips" / f"{r.clip_id}.mp4")
        assert len(clip) == r.n_frames
        # the clip is a lossy re-encode: near its source frames, never a held earlier one
        err = [np.abs(a - b).mean() for a, b in zip(clip, source[r.start_frame : r.end_frame])]
        assert max(err) < 4, (r.clip_id, int(np.argmax(err)), max(err))
        assert "frozen" not in r.quality_flags, r.clip_id
