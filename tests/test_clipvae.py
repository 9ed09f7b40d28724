"""The learned latent space (training/clipvae.py): it learns to redraw clips, keeps the latent
interface the trainer and sampler use, and a run trains it once, as its first stage."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

from training.clipvae import META, WEIGHTS, ClipVAE, Depth2Space, LearnedSpace, Space2Depth, train_vae, vae_loss
from training.config import CONFIG_DIR, LatentConfig


def sliding_texture(n: int, frames: int = 8, size: int = 16, seed: int = 0) -> torch.Tensor:
    """uint8 [n, frames, 3, size, size]: smooth random colour fields sliding 1 px a frame."""
    g = np.random.default_rng(seed)
    clips = []
    for _ in range(n):
        field = g.random((3, size // 4, (size + frames) // 4 + 1))
        big = np.kron(field, np.ones((4, 4)))[:, :size]
        dx = g.choice([-1, 1])
        start = frames if dx < 0 else 0
        clips.append(np.stack([big[:, :, start + dx * t : start + dx * t + size] for t in range(frames)]))
    return torch.from_numpy((np.stack(clips) * 255).round().astype(np.uint8))


def test_space_to_depth_round_trips():
    x = torch.randn(2, 3, 4, 8, 12)
    assert Space2Depth()(x).shape == (2, 12, 4, 4, 6)
    assert torch.equal(Depth2Space()(Space2Depth()(x)), x)


def test_the_vae_learns_to_redraw_clips_and_keeps_the_latent_interface(tmp_path):
    data = sliding_texture(16)
    batches = ({"video": data[(i * 4) % 16 : (i * 4) % 16 + 4]} for i in range(10_000))
    lc = LatentConfig(kind="learned", channels=4, width=16, time_stride=2, steps=300, lr=2e-3, kl=1e-4, motion=2.0)
    meta = train_vae(batches, tmp_path / "vae", lc, seed=0)
    first, last = meta["history"][0], meta["history"][-1]
    assert last["l1"] < 0.5 * first["l1"], meta["history"]
    space = LearnedSpace(tmp_path / "vae")
    assert space.latent_shape(8, (16, 16)) == (4, 4, 4, 4)
    z = space.encode(data[:4])
    assert z.shape == (4, 4, 4, 4, 4)
    # normalised with the training clips' statistics: unit scale per channel
    assert abs(float(z.mean())) < 0.5 and 0.5 < float(z.std()) < 2.0
    back = space.decode(z)
    assert back.dtype == torch.uint8 and back.shape == data[:4].shape
    # better than the best constant picture per clip (its mean colour), by a wide margin
    err = (back.float() - data[:4].float()).abs().mean()
    flat = (data[:4].float() - data[:4].float().mean(dim=(1, 3, 4), keepdim=True)).abs().mean()
    assert err < 0.6 * flat, (float(err), float(flat))
    with pytest.raises(ValueError, match="divisible by 2"):
        space.latent_shape(9, (16, 16))


def test_a_folder_without_its_metadata_is_not_a_vae(tmp_path):
    (tmp_path / "vae").mkdir()
    torch.save(ClipVAE(4, 16).state_dict(), tmp_path / "vae" / WEIGHTS)  # killed before vae.json
    with pytest.raises(FileNotFoundError, match="no trained VAE"):
        LearnedSpace(tmp_path / "vae")


def pks(*args):
    return subprocess.run(
        [sys.executable, "-m", "pks.cli", *map(str, args)], capture_output=True, text=True, timeout=600
    )


def learned_cfg(tmp_path, **latent):
    cfg = yaml.safe_load((CONFIG_DIR / "tiny.yaml").read_text())
    cfg["data"].update(frames=8, size=[16, 16], batch_size=4)
    cfg["train"].update(steps=3, log_every=1, ckpt_every=2, warmup=2)
    cfg["sample"]["steps"] = 3
    cfg["dpo"].update(steps=2, batch=2, pairs="offline")
    cfg["arch"].update(patch=[1, 2, 2], in_channels=4)
    cfg["latent"] = {
        "kind": "learned",
        "path": None,
        "channels": 4,
        "width": 16,
        "time_stride": 2,
        "steps": 4,
        "lr": 1e-3,
        "batch_size": 4,
        "kl": 1e-4,
        "motion": 2.0,
        **latent,
    }
    path = tmp_path / f"learned-{len(list(tmp_path.glob('learned-*')))}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_a_learned_run_trains_its_vae_once_and_generates_through_it(sharded_run, tmp_path):
    run = tmp_path / "run"
    r = pks("train", sharded_run, "--config", learned_cfg(tmp_path), "--out", run)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "trained the VAE" in r.stderr and (run / "vae" / META).is_file()
    meta = json.loads((run / "vae" / META).read_text())
    assert meta["steps"] == 4 and len(meta["latent_std"]) == 4
    stamp = (run / "vae" / WEIGHTS).stat().st_mtime_ns
    # resumed: the run's VAE is kept, not trained again
    r = pks("train", sharded_run, "--config", learned_cfg(tmp_path), "--out", run, "--resume", "--steps", 4)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "trained the VAE" not in r.stderr and (run / "vae" / WEIGHTS).stat().st_mtime_ns == stamp
    # a second run on the same shards reuses it through latent.path
    second = tmp_path / "second"
    r = pks("train", sharded_run, "--config", learned_cfg(tmp_path, path=str(run / "vae")), "--out", second)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "trained the VAE" not in r.stderr and not (second / "vae").exists()
    r = pks("generate", run, "--tags", "camera=pan_left", "--out", tmp_path / "clip.mp4")
    assert r.returncode == 0, r.stderr[-3000:]
    made = json.loads(r.stdout)
    assert made["frames"] == 8 and made["size"] == [16, 16]
    # the preference stage starts from the run and keeps drawing through the run's VAE
    r = pks(
        "train",
        sharded_run,
        "--stage",
        "dpo",
        "--init",
        run,
        "--config",
        learned_cfg(tmp_path),
        "--out",
        tmp_path / "dpo",
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert yaml.safe_load((tmp_path / "dpo" / "config.yaml").read_text())["latent"]["path"] == str(
        (run / "vae").resolve()
    )
    r = pks("generate", tmp_path / "dpo", "--tags", "camera=static", "--out", tmp_path / "dpo.mp4")
    assert r.returncode == 0 and json.loads(r.stdout)["frames"] == 8, r.stderr[-3000:]
    # a model that reads another number of channels than the space has: one line, exit 2
    bad = learned_cfg(tmp_path, path=str(run / "vae"))
    cfg = yaml.safe_load(bad.read_text())
    cfg["arch"]["in_channels"] = 3
    bad.write_text(yaml.safe_dump(cfg))
    r = pks("train", sharded_run, "--config", bad, "--out", tmp_path / "bad")
    assert r.returncode == 2 and "latent channels" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    # latent.path naming a folder without a VAE: one line, exit 2
    r = pks("train", sharded_run, "--config", learned_cfg(tmp_path, path=str(tmp_path)), "--out", tmp_path / "none")
    assert r.returncode == 2 and "holds no trained VAE" in r.stderr


def test_set_overrides_config_values_and_names_a_typo(sharded_run, tmp_path):
    from pks.errors import UserError
    from pks.typedconfig import parse_sets
    from training.config import load_train_config

    sets = parse_sets(["latent.steps=300", "latent.path=/runs/a/vae", "data.size=[16, 32]"])
    cfg = load_train_config("tiny", sets)
    assert cfg.latent.steps == 300 and cfg.latent.path == "/runs/a/vae" and cfg.data.size == (16, 32)
    with pytest.raises(UserError, match="did you mean latent.steps"):
        load_train_config("tiny", parse_sets(["latent.stepz=3"]))
    with pytest.raises(UserError, match="did you mean latent.steps"):
        load_train_config("tiny", parse_sets(["latnt.steps=3"]))  # a typo above the leaf, too
    r = pks("train", sharded_run, "--config", "tiny", "--set", "latent.steps", "--out", tmp_path / "run")
    assert r.returncode == 2 and "--set takes KEY=VALUE" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_set_values_hold_where_the_matching_option_is_left_out():
    """`pks train ... --set train.steps=6000` without --steps trained the config's 2,000 steps:
    the options left out (None) were merged over the --set values. An option given still wins."""
    from training.jobs import job_config

    cfg = job_config("tiny", sets=["train.steps=6000", "data.batch_size=4", "tag_channel=false"])
    assert (cfg.train.steps, cfg.data.batch_size, cfg.tag_channel) == (6000, 4, False)
    cfg = job_config("tiny", steps=10, batch_size=2, sets=["train.steps=6000", "data.batch_size=4"])
    assert (cfg.train.steps, cfg.data.batch_size, cfg.tag_channel) == (10, 2, True)


def test_unit_range_round_trips_every_uint8_level():
    from training.pixels import to_uint8, to_unit

    video = torch.arange(256, dtype=torch.uint8).repeat(2 * 3 * 4 * 2).view(2, 4, 3, 16, 32)  # [B, T, 3, H, W]
    x = to_unit(video)
    assert x.shape == (2, 3, 4, 16, 32) and x.min() == -1.0 and x.max() == 1.0
    assert torch.equal(to_uint8(x), video)
    beyond = torch.tensor([-3.0, -1.5, 1.5, 3.0]).view(1, 1, 4, 1, 1)  # [B, 3=1 here, T, H, W]
    assert to_uint8(beyond).flatten().tolist() == [0, 0, 255, 255]  # clamped, not wrapped


@pytest.mark.parametrize("still", [1, 7])
def test_the_per_clip_motion_term_is_not_diluted_by_still_clips(still):
    """One moving clip redrawn as a still frame among `still` clips redrawn exactly: the plain
    motion term shrinks with every still clip in the batch, the per-clip one stays that clip's
    own motion error (issue 21: a VAE that mostly sees still clips redraws moving ones still)."""
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(still + 1, 3, 1, 8, 8, generator=g) * 2 - 1).repeat(1, 1, 4, 1, 1)
    x[0] = torch.stack([torch.roll(x[0, :, 0], t, dims=-1) for t in range(4)], dim=1)  # a pan
    recon = x.clone()
    recon[0] = x[0, :, :1]  # the moving clip redrawn still
    own = ((x[0, :, 1:] - x[0, :, :-1]).abs().mean()).item()  # its motion error: all its change
    mean, logvar = torch.zeros(1), torch.zeros(1)
    _, plain = vae_loss(x, recon, mean, logvar, 0.0, 1.0)
    _, per_clip = vae_loss(x, recon, mean, logvar, 0.0, 1.0, per_clip=True)
    assert plain["motion_l1"] == pytest.approx(own / (still + 1), rel=1e-4)
    assert per_clip["motion_l1"] == pytest.approx(own, rel=1e-4)
