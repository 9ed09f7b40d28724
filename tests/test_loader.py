"""The trainer's data module over real shards: tensors, tags from the taxonomy, the stage
schedule, exact resume and identical batches with DataLoader workers."""
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

import taxonomy
from training.data import CurriculumLoader, Schedule, decode_clip, tag_targets


def loader(run, **kw):
    return CurriculumLoader(run / "shards", **{"frames": 6, "fps": 12, "size": (48, 80), "batch_size": 3, **kw})


def ids(batches):
    return [[r["clip_id"] for r in b["records"]] for b in batches]


def test_batches_hold_video_text_tags_and_records(sharded_run):
    batches = list(loader(sharded_run, steps=4))
    assert [b["step"] for b in batches] == [0, 1, 2, 3]
    tax = taxonomy.load()
    for b in batches:
        assert b["video"].shape == (3, 6, 3, 48, 80) and b["video"].dtype == torch.uint8
        assert b["video"].float().std() > 5  # real pictures, not padding
        for i, rec in enumerate(b["records"]):
            assert b["stage"][i] == rec["curriculum_stage"] and b["text"][i] == rec["caption"]["narrative"]
            for axis in taxonomy.TAG_AXES:
                on = [tax.axes[axis].ids[j] for j in torch.nonzero(b["tags"][axis][i]).flatten().tolist()]
                assert sorted(on) == sorted(rec["caption"][axis])
            assert tax.axes["shot"].ids[b["shot"][i]] == rec["caption"]["shot"]
    train = {r["clip_id"] for r in pq.read_table(sharded_run / "shards" / "index.parquet").to_pylist()
             if r["split"] == "train"}
    assert {c for b in ids(batches) for c in b} <= train


def test_resume_from_a_step_and_workers_give_the_same_batches(sharded_run):
    full = list(loader(sharded_run, steps=8, seed=5))
    resumed = list(loader(sharded_run, steps=4, seed=5, start_step=4))
    assert ids(resumed) == ids(full[4:])
    assert all(torch.equal(a["video"], b["video"]) for a, b in zip(resumed, full[4:]))
    dl = torch.utils.data.DataLoader(loader(sharded_run, steps=8, seed=5), batch_size=None, num_workers=2)
    assert ids(list(dl)) == ids(full)
    assert ids(list(loader(sharded_run, steps=8, seed=6))) != ids(full)
    windows = list(loader(sharded_run, steps=8, seed=5, random_window=True))
    assert ids(windows) == ids(full)  # same clips, other windows of the longer ones
    assert any(not torch.equal(a["video"], b["video"]) for a, b in zip(windows, full))
    resumed = list(loader(sharded_run, steps=4, seed=5, start_step=4, random_window=True))
    assert all(torch.equal(a["video"], b["video"]) for a, b in zip(resumed, windows[4:]))


def test_schedule_moves_the_mix_from_physical_to_extreme(tmp_path):
    rows = [{"clip_id": f"c{k}_{i}", "video_id": "v", "split": "train", "stage": k, "shard": f"s{k}.tar",
             "position": i, "clip_bytes": 1} for k in (0, 1, 3) for i in range(5)]  # stage 2 has no clips
    (tmp_path / "shards").mkdir()
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "shards" / "index.parquet")
    sched = Schedule(start=(0.5, 0.5, 0, 0), end=(0, 0, 0.5, 0.5), steps=100)
    lo = CurriculumLoader(tmp_path / "shards", schedule=sched, batch_size=1000)  # 2 steps per 2000 samples
    early = np.bincount([lo.stage_of(i) for i in range(2000)], minlength=4)
    late = np.bincount([lo.stage_of(i) for i in range(100_000, 102_000)], minlength=4)
    assert abs(early[0] - 1000) < 120 and abs(early[1] - 1000) < 120 and early[2:].sum() < 20
    assert late[3] == 2000  # the empty stage's weight goes to the others
    assert np.allclose(sched.weights(50), [0.25, 0.25, 0.25, 0.25])


def test_decode_clip_samples_at_fps_and_pads_short_clips(sharded_run):
    rec = pq.read_table(sharded_run / "manifest.parquet").to_pylist()[0]
    data = (sharded_run / "clips" / f"{rec['clip_id']}.mp4").read_bytes()
    n = rec["end_frame"] - rec["start_frame"]
    frames, real = decode_clip(data, rec["fps"], 4, rec["fps"] / 2, (32, 32))  # every other frame
    assert frames.shape == (4, 32, 32, 3) and real == 4
    frames, real = decode_clip(data, rec["fps"], n + 5, rec["fps"], (32, 32))
    assert real == n and np.array_equal(frames[-1], frames[n - 1])
    later, real = decode_clip(data, rec["fps"], 3, rec["fps"], (32, 32), start=2)
    assert real == 3 and np.array_equal(later, frames[2:5])
    with pytest.raises(ValueError, match="cannot decode the clip"):
        decode_clip(b"not a video", 24, 4, 8, (32, 32))
    with pytest.raises(ValueError, match="cannot decode the clip"):
        decode_clip(data[: len(data) // 8], rec["fps"], 4, rec["fps"], (32, 32))


def test_tag_targets_of_uncaptioned_clip():
    tags, shot = tag_targets(None, taxonomy.load())
    assert shot == -1 and all(v.sum() == 0 for v in tags.values())
