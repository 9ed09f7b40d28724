"""Camera moves from static clips (training/augment.py): the project's own camera analyser reads
each move as the tag it is given, and the loader turns only static clips into moves, the same
way on every draw."""

import cv2
import numpy as np
import pytest
import torch

import taxonomy
from annotators.signals import analyse, load_clip
from pks.config import load_config
from pks.videoio import Mp4Writer
from training.augment import MIRRORED_TAGS, MOVES, mirror, move_window, swap_sides
from training.data import CurriculumLoader


def plate(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A still picture with structure at every scale (blurred noise plus a few flat shapes)."""
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.uniform(0, 255, (h, w, 3)).astype(np.float32), (0, 0), 3)
    img = cv2.normalize(img, None, 0, 255, cv2.NORM_MINMAX)
    for _ in range(6):
        x, y = rng.integers(0, w), rng.integers(0, h)
        cv2.circle(img, (int(x), int(y)), int(rng.integers(h // 10, h // 4)), rng.uniform(0, 255, 3).tolist(), -1)
    return img.astype(np.uint8)


def analysed(frames: np.ndarray, path) -> dict:
    """The project's own analysis of 180x320 frames written as a 12 fps mp4."""
    cfg = load_config()
    w = Mp4Writer(path, 12, 320, 180, crf=12)
    for f in frames:
        w.write(f)
    w.close()
    return analyse(load_clip(str(path), width=cfg.analyse.width, fps=12), cfg.analyse, cfg.curriculum)


@pytest.mark.parametrize("move", sorted(MOVES))
def test_the_camera_analyser_reads_each_move(tmp_path, move):
    # 180x320 at 12 fps, 16 frames: the generator's window (scaled up so the analyser's width
    # holds detail); a static shot until the window moves.
    still = np.repeat(plate(180, 320)[None], 16, axis=0)
    moved = move_window(still, move, 0.2)
    for frames, want in ((still, "static"), (moved, move)):
        rec = analysed(frames, tmp_path / f"{want}.mp4")
        assert rec["camera_motion"] == [want], (want, rec["signals"])


def test_a_mirrored_pan_reads_as_the_other_pan(tmp_path):
    # The tag swap follows the analyser's own convention: a window panning left, seen in a
    # mirror, must read as pan_right, and a tilt stays the tilt it was.
    still = np.repeat(plate(180, 320, seed=2)[None], 16, axis=0)
    for move in ("pan_left", "tilt_up"):
        caption = {"camera": [move], "narrative": "She runs to the Left, then looks right."}
        frames, flipped, done = mirror(move_window(still, move, 0.2), caption, 1.0, 0, 0)
        assert done and flipped["camera"] == [MIRRORED_TAGS.get(move, move)]
        assert flipped["narrative"] == "She runs to the Right, then looks left."
        rec = analysed(frames, tmp_path / f"{move}.mp4")
        assert rec["camera_motion"] == flipped["camera"], (move, rec["signals"])


def test_the_mirror_flips_only_what_it_draws_and_names_only_whole_words():
    video = np.arange(2 * 4 * 6 * 3, dtype=np.uint8).reshape(2, 4, 6, 3)
    caption = {"camera": ["static"], "narrative": "LEFT leftover Right", "vfx": ["speed_lines"]}
    same = mirror(video, caption, 0.0, 0, 0)
    assert same[0] is video and same[1] is caption and same[2] is False
    drawn = [mirror(video, caption, 0.5, 7, i)[2] for i in range(400)]
    assert drawn == [mirror(video, caption, 0.5, 7, i)[2] for i in range(400)]  # (seed, index) decide
    assert 150 < sum(drawn) < 250
    out, cap, _ = mirror(video, caption, 1.0, 7, 0)
    assert np.array_equal(out, video[:, :, ::-1]) and cap["vfx"] == ["speed_lines"] and cap["camera"] == ["static"]
    assert cap["narrative"] == "RIGHT leftover Left" == swap_sides("LEFT leftover Right")
    assert caption["narrative"] == "LEFT leftover Right"  # the record's own caption is left alone


def test_the_window_travels_the_asked_share_of_the_frame():
    still = np.repeat(plate(90, 160, seed=1)[None], 9, axis=0)
    moved = move_window(still, "pan_right", 0.2)
    first, last = (cv2.cvtColor(moved[i], cv2.COLOR_RGB2GRAY).astype(np.float32) for i in (0, -1))
    (dx, dy), _ = cv2.phaseCorrelate(first, last)
    # The window travels 0.2 of the frame's width, seen at 1/ZOOM magnification: the picture
    # slides left by 0.2 / 0.75 of the output width.
    assert dx == pytest.approx(-0.2 / 0.75 * 160, abs=1.0) and abs(dy) < 0.5
    with pytest.raises(ValueError, match="outside"):
        move_window(still, "pan_left", 0.3)
    with pytest.raises(ValueError, match="unknown camera move"):
        move_window(still, "dolly", 0.1)


def test_the_loader_moves_static_clips_only_and_alike_on_every_draw(sharded_run):
    def batches(rate):
        lo = CurriculumLoader(
            sharded_run / "shards", frames=6, fps=12, size=(48, 80), batch_size=3, steps=6, seed=4, camera_moves=rate
        )
        return list(lo)

    plain, moved, again = batches(0.0), batches(1.0), batches(1.0)
    tax = taxonomy.load()
    camera_ids = tax.axes["camera"].ids
    n_moved = 0
    for p, m, a in zip(plain, moved, again):
        assert torch.equal(m["video"], a["video"])  # (seed, index) decide: resumes and workers agree
        for i, (rp, rm) in enumerate(zip(p["records"], m["records"])):
            on = [camera_ids[j] for j in torch.nonzero(m["tags"]["camera"][i]).flatten().tolist()]
            if rp["caption"]["camera"] == ["static"]:
                n_moved += 1
                assert rm["camera_move"] in MOVES and on == [rm["camera_move"]]
                assert rm["caption"]["camera"] == [rm["camera_move"]]
                assert not torch.equal(m["video"][i], p["video"][i])
            else:
                assert "camera_move" not in rm and torch.equal(m["video"][i], p["video"][i])
                assert sorted(on) == sorted(rp["caption"]["camera"])
    assert n_moved > 0


def test_the_loader_mirrors_clips_with_their_pans_and_their_moves(sharded_run):
    def batches(**kw):
        return list(
            CurriculumLoader(
                sharded_run / "shards", frames=6, fps=12, size=(48, 80), batch_size=3, steps=6, seed=4, **kw
            )
        )

    camera_ids = taxonomy.load().axes["camera"].ids
    pans = 0
    for kw in ({}, {"camera_moves": 1.0}):
        plain, flipped = batches(**kw), batches(mirror=1.0, **kw)
        for p, m in zip(plain, flipped):
            assert torch.equal(m["video"], p["video"].flip(-1))  # [B, T, C, H, W]: W flipped
            for i, (rp, rm) in enumerate(zip(p["records"], m["records"])):
                want = [MIRRORED_TAGS.get(t, t) for t in rp["caption"]["camera"]]
                assert rm["mirrored"] and rm["caption"]["camera"] == want
                on = [camera_ids[j] for j in torch.nonzero(m["tags"]["camera"][i]).flatten().tolist()]
                assert sorted(on) == sorted(want)
                pans += len(set(want) & set(MIRRORED_TAGS))
                if "camera_move" in rp:
                    assert rm["camera_move"] == MIRRORED_TAGS.get(rp["camera_move"], rp["camera_move"])
    assert pans > 0  # a pan was there to swap


def test_the_vae_learns_from_the_same_moved_clips_as_the_dit(sharded_run, tmp_path):
    """The learned VAE's stream moves static clips as the DiT's does (data.camera_moves): the DiT
    learns from the latents of moved clips, so the VAE must learn to redraw them (issue 21's
    two-tag toy: a VAE trained on mostly static footage halves a pan's shift). Before, the VAE's
    stream never moved a clip."""
    import yaml

    from training.config import CONFIG_DIR, load_train_config
    from training.train import vae_stream

    follow = tmp_path / "follow.yaml"  # tiny with latent.camera_moves null: the VAE follows the DiT's rate
    data = yaml.safe_load((CONFIG_DIR / "tiny.yaml").read_text())
    data["latent"]["camera_moves"] = None
    follow.write_text(yaml.safe_dump(data))

    def records(rate):
        cfg = load_train_config(
            follow,
            {
                "data.camera_moves.rate": rate,
                "data.size": [48, 80],
                "data.frames": 6,
                "latent.steps": 6,
            },
        )
        return [r for b in vae_stream(sharded_run / "shards", cfg) for r in b["records"]]

    moved, plain = records(1.0), records(0.0)
    assert len(moved) == len(plain) == 6 * 8  # latent.steps batches of latent.batch_size
    assert any(r.get("camera_move") in MOVES for r in moved)
    assert not any("camera_move" in r for r in plain)


def test_the_vae_stream_can_move_more_clips_than_the_dits(sharded_run):
    """latent.camera_moves sets the VAE's own move rate, apart from the DiT's: the VAE must see
    enough moving clips to keep a pan's shift (issue 21)."""
    from training.config import load_train_config
    from training.train import vae_stream

    cfg = load_train_config(
        "tiny",
        {
            "data.camera_moves.rate": 0.0,
            "latent.camera_moves": 1.0,
            "data.size": [48, 80],
            "data.frames": 6,
            "latent.steps": 6,
        },
    )
    assert any(r.get("camera_move") in MOVES for b in vae_stream(sharded_run / "shards", cfg) for r in b["records"])
    with pytest.raises(Exception, match="latent.camera_moves"):
        load_train_config("tiny", {"latent.camera_moves": 1.5})
