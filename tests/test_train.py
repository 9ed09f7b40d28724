"""The bundled generator: model structure, the trainer (exact resume after kill -9, DDP and
FSDP2 on 2 CPU processes equal one process, Ray Train), latent shards and `pks generate`."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import av
import pyarrow.parquet as pq
import pytest
import torch
import yaml

import taxonomy
from pks.errors import UserError
from support.procs import kill_9_when
from training.checkpoint import trim_metrics
from training.conditioning import draws
from training.config import CONFIG_DIR, load_train_config
from training.data import tar_sample
from training.model import MODELS, DiTConfig, TagEncoder, VideoDiT, flops_per_step
from training.text import TextEncoder
from training.tiny import build_text_encoder

TAX = taxonomy.load()
TINY = DiTConfig(in_channels=3, patch=(2, 4, 4), dim=64, depth=2, heads=2, text_dim=32)


def inputs(b=2, shape=(3, 8, 16, 16), text_dim=32):
    tags = {a: torch.zeros(b, len(TAX.axes[a].ids)) for a in taxonomy.TAG_AXES}
    tags["camera"][0, TAX.index("camera", "pan_left")] = 1
    return dict(
        x=torch.randn(b, *shape),
        t=torch.rand(b),
        text=torch.randn(b, 5, text_dim),
        text_mask=torch.tensor([[True] * 5, [True] * 2 + [False] * 3]),
        tags=tags,
        known=torch.ones(b, 4, dtype=torch.bool),
        shot=torch.tensor([0, -1]),
        stage=torch.tensor([2, -1]),
    )


def test_shapes_and_adaln_zero_identity_at_init():
    torch.manual_seed(0)
    model = VideoDiT(TINY, TAX)
    inp = inputs()
    out = model(**inp)
    assert out.shape == inp["x"].shape and torch.count_nonzero(out) == 0  # zero-initialised final layer
    block = model.blocks[0]
    tokens = torch.randn(2, 32, 64)
    c = torch.randn(2, 64)
    assert torch.equal(block(tokens, c, torch.randn(2, 5, 64), inp["text_mask"], None), tokens)  # gates are 0
    for p in model.parameters():  # once trained (any nonzero modulation), blocks stop being the identity
        torch.nn.init.normal_(p, std=0.02)
    assert not torch.allclose(block(tokens, c, torch.randn(2, 5, 64), inp["text_mask"], None), tokens)
    with pytest.raises(ValueError, match="not divisible by the patch"):
        model(**{**inp, "x": torch.randn(2, 3, 7, 16, 16)})


def test_output_parameterisations_at_init_and_the_ema_warm_up():
    """At initialisation (network output 0): `velocity` predicts 0 (samples stay noise), `x0`
    predicts a black clip, `precond` is the best linear denoiser, which leaves a nearly clean
    input as it is (x0 = x_t - t v -> x_t as t -> 0) and predicts the data's mean (0) from pure noise."""
    from dataclasses import replace

    from training.train import ema_decay_at

    torch.manual_seed(0)
    inp = inputs()
    for t in (0.02, 0.5, 1.0):
        inp["t"] = torch.full((2,), t)
        kept = (1 - t) * 0.25 / ((1 - t) ** 2 * 0.25 + t**2)  # E[x0 | x_t] / x_t for data of std 0.5
        x0_of = {}
        for pred in ("velocity", "x0", "precond"):
            model = VideoDiT(replace(TINY, prediction=pred), TAX)
            x0_of[pred] = inp["x"] - t * model(**inp)  # the clean clip the model implies
        assert torch.equal(x0_of["velocity"], inp["x"])
        clipped = 1 - t / max(t, 0.05)  # below t = 0.05 the division is clipped (X0_MIN_T)
        assert torch.allclose(x0_of["x0"], clipped * inp["x"], atol=1e-5)
        assert torch.allclose(x0_of["precond"], kept * inp["x"], atol=1e-5), t
    with pytest.raises(ValueError, match="prediction must be"):
        from training.model import model_config

        model_config("tiny", {"prediction": "eps"})
    assert ema_decay_at(0, 0.995) == 0.1 and ema_decay_at(90, 0.995) == 0.91 and ema_decay_at(5000, 0.995) == 0.995


def test_tag_encoder_keeps_the_field_value_structure():
    torch.manual_seed(0)
    enc = TagEncoder(TAX, 32)
    n = {a: len(TAX.axes[a].ids) for a in taxonomy.TAG_AXES}

    def fields(axis=None, index=None, known=True, shot=-1, stage=-1):
        tags = {a: torch.zeros(1, n[a]) for a in taxonomy.TAG_AXES}
        if axis:
            tags[axis][0, index] = 1
        return enc.fields_of(tags, torch.full((1, 4), known), torch.tensor([shot]), torch.tensor([stage]))[0]

    # The same tag id (row 0) under two axes: different vectors (each axis has its own table and field).
    style, motion = taxonomy.TAG_AXES.index("style"), taxonomy.TAG_AXES.index("motion")
    assert not torch.allclose(fields("style", 0)[style], fields("motion", 0)[motion])
    # Multi-label: two tags pool to the mean of their single-tag vectors.
    tags = {a: torch.zeros(1, n[a]) for a in taxonomy.TAG_AXES}
    tags["vfx"][0, [1, 4]] = 1
    both = enc.fields_of(tags, torch.ones(1, 4, dtype=torch.bool), torch.tensor([-1]), torch.tensor([-1]))[0]
    vfx = taxonomy.TAG_AXES.index("vfx")
    assert torch.allclose(both[vfx], (fields("vfx", 1)[vfx] + fields("vfx", 4)[vfx]) / 2, atol=1e-6)
    # A known axis with no tag ("none") differs from an unlabelled one ("unknown").
    assert not torch.allclose(fields(known=True)[style], fields(known=False)[style])
    # Shot and stage are fields of their own; the mixed vector changes with each.
    assert not torch.allclose(fields(shot=0)[4], fields(shot=-1)[4])
    assert not torch.allclose(fields(stage=3)[5], fields(stage=0)[5])
    assert enc.fields_of(tags, torch.ones(1, 4, dtype=torch.bool), torch.tensor([0]), torch.tensor([1])).shape == (
        1,
        6,
        32,
    )


def test_guidance_dropout_is_independent_per_axis_and_for_the_narrative():
    cfg = load_train_config("tiny", {"train.drop_tags": 0.2, "train.drop_text": 0.3, "train.drop_all": 0.0})
    ds = [draws(0, i, (1,), cfg) for i in range(4000)]
    axes = torch.stack([d["drop_axes"] for d in ds]).float()
    text = torch.tensor([d["drop_text"] for d in ds]).float()
    assert torch.allclose(axes.mean(0), torch.full((4,), 0.2), atol=0.025)
    assert abs(text.mean() - 0.3) < 0.025
    assert abs((axes[:, 0] * text).mean() - 0.2 * 0.3) < 0.015  # independent of each other
    assert abs((axes[:, 0] * axes[:, 1]).mean() - 0.04) < 0.012
    assert draws(0, 7, (2, 3), cfg)["noise"].equal(draws(0, 7, (2, 3), cfg)["noise"])  # a pure function


def test_the_unconditional_branch_that_guidance_subtracts_is_trained():
    """Guidance subtracts v(-, -): every tag axis, shot and stage unknown, empty text. Dropped
    only one by one (0.1 each), a clip whose caption knows camera, vfx and stage was seen that
    way once in a thousand samples or less; `train.drop_all` drops them together."""
    cfg = load_train_config("tiny")
    ds = [draws(0, i, (1,), cfg) for i in range(4000)]
    every = [bool(d["drop_axes"].all()) and d["drop_shot"] and d["drop_stage"] and d["drop_text"] for d in ds]
    assert abs(sum(every) / len(ds) - cfg.train.drop_all) < 0.015 and cfg.train.drop_all >= 0.05
    # Partial specification is still trained axis by axis.
    axes = torch.stack([d["drop_axes"] for d in ds if not d["drop_text"]]).float()
    assert 0.0 < axes.mean() < 0.2


def test_text_states_are_cached_per_narrative(tmp_path):
    enc = TextEncoder(build_text_encoder(tmp_path / "te", d_model=32))
    a = enc.states(["a girl runs", "", "a girl runs"])
    assert enc.encoded == 2 and torch.equal(a[0], a[2]) and a[1].shape[0] < a[0].shape[0]
    enc.states(["a girl runs", ""])
    assert enc.encoded == 2  # nothing encoded twice
    states, mask = enc(["a girl runs", ""])
    assert states.shape[:2] == mask.shape and mask.sum(1).tolist() == [a[0].shape[0], a[1].shape[0]]


def test_configs_and_the_base_model_on_the_meta_device():
    assert {p.stem for p in CONFIG_DIR.glob("*.yaml")} == {"tiny", "tiny_pixel", "small", "base"}
    for name in ("tiny", "small", "base"):
        assert load_train_config(name).model == name
    assert load_train_config("tiny_pixel").latent.kind == "pixel"
    learned = load_train_config("tiny")  # in a latent space the run trains first (training/clipvae.py)
    assert learned.model == "tiny" and learned.latent.kind == "learned"
    assert learned.arch is not None and learned.arch["in_channels"] == learned.latent.channels
    with torch.device("meta"):
        base = VideoDiT(MODELS["base"], TAX)
    params = sum(p.numel() for p in base.parameters())
    assert 1.0e9 < params < 2.0e9  # sized like the 1-2B open video DiTs
    tokens = 21 * 30 * 52  # 81 frames of 480x832 through the Wan VAE, patch (1, 2, 2)
    flops = flops_per_step(MODELS["base"], tokens, 512, 1)
    assert 2 * 3 * params * tokens < flops < 3 * 2 * 3 * params * tokens  # weights + attention over 33k tokens


def test_trim_metrics_skips_a_torn_line_and_replaces_the_file_whole(tmp_path):
    """A kill mid-write tears the last line; the rewrite goes to a new file renamed over the
    old one (a kill during it leaves the old file, not a truncated one)."""
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 0.5}\n{"step": 2, "loss": 0.4}\n{"step": 3, "loss": 0.3}\n{"step": 4, "lo')
    inode = path.stat().st_ino
    trim_metrics(path, 2)
    assert path.read_text() == '{"step": 1, "loss": 0.5}\n{"step": 2, "loss": 0.4}\n'
    assert path.stat().st_ino != inode and [p.name for p in tmp_path.iterdir()] == ["metrics.jsonl"]


@pytest.fixture(scope="module")
def small_cfg(tmp_path_factory):
    """The pixel-space tiny config made smaller still: 8 frames of 16x16, 4 clips a step, a log line
    a step (no first stage: these tests are about the trainer; tests/test_clipvae.py runs `tiny`'s)."""
    cfg = yaml.safe_load((CONFIG_DIR / "tiny_pixel.yaml").read_text())
    cfg["data"].update(frames=8, size=[16, 16], batch_size=4)
    cfg["train"].update(steps=6, log_every=1, ckpt_every=2, warmup=2)
    cfg["sample"]["steps"] = 4
    path = tmp_path_factory.mktemp("cfg") / "small.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def pks(*args, **kw):
    return subprocess.run(
        [sys.executable, "-m", "pks.cli", *map(str, args)], capture_output=True, text=True, timeout=600, **kw
    )


def losses(run: Path) -> list[tuple[int, float]]:
    return [(m["step"], m["loss"]) for m in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())]


@pytest.fixture(scope="module")
def trained(sharded_run, small_cfg, tmp_path_factory):
    run = tmp_path_factory.mktemp("train") / "run"
    r = pks("train", sharded_run, "--config", small_cfg, "--out", run)
    assert r.returncode == 0, r.stderr[-3000:]
    return run


def test_a_run_logs_every_step_checkpoints_and_refuses_to_overwrite(trained, sharded_run, small_cfg):
    assert [s for s, _ in losses(trained)] == [1, 2, 3, 4, 5, 6]
    assert [p.name for p in sorted((trained / "checkpoints").iterdir())] == ["step-00000004", "step-00000006"]
    m = json.loads((trained / "metrics.jsonl").read_text().splitlines()[-1])
    assert m["stage_loss"] and m["steps_per_s"] > 0 and m["tokens_per_s"] > 0
    assert list((trained / "tensorboard").iterdir())
    r = pks("train", sharded_run, "--config", small_cfg, "--out", trained)
    assert r.returncode == 2 and "pass --resume" in r.stderr


def test_kill_9_then_resume_reproduces_the_uninterrupted_losses(trained, sharded_run, small_cfg, tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "pks.cli", "train", str(sharded_run), "--config", str(small_cfg), "--out", str(run)]
    kill_9_when(cmd, lambda: (run / "checkpoints" / "step-00000002").is_dir() and len(losses(run)) >= 3, poll=0.01)
    assert (run / "checkpoints" / "step-00000002").is_dir() and not (run / "checkpoints" / "step-00000006").exists()
    torn = run / "checkpoints" / "step-00000004.tmp"  # as a kill during a checkpoint write leaves it
    torn.mkdir(exist_ok=True)
    (torn / "state.pt").write_bytes(b"half a checkpoint")
    r = pks("train", sharded_run, "--config", small_cfg, "--out", run, "--resume")
    assert r.returncode == 0, r.stderr[-3000:]
    assert losses(run) == losses(trained)  # bit for bit, each step once
    assert not torn.exists()


def test_ddp_and_fsdp_on_two_processes_equal_one_process(trained, sharded_run, small_cfg, tmp_path):
    torchrun = Path(sys.executable).parent / "torchrun"
    fsdp_cfg = tmp_path / "fsdp.yaml"
    cfg = yaml.safe_load(small_cfg.read_text())
    cfg["train"]["parallel"] = "fsdp"
    fsdp_cfg.write_text(yaml.safe_dump(cfg))
    for name, config in (("ddp", small_cfg), ("fsdp", fsdp_cfg)):
        run = tmp_path / name
        r = subprocess.run(
            [
                str(torchrun),
                "--nproc_per_node",
                "2",
                "-m",
                "pks.cli",
                "train",
                str(sharded_run),
                "--config",
                str(config),
                "--out",
                str(run),
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert r.returncode == 0, r.stderr[-3000:]
        got, want = losses(run), losses(trained)
        assert [s for s, _ in got] == [s for s, _ in want]
        assert all(abs(a - b) <= 1e-5 * abs(b) for (_, a), (_, b) in zip(got, want)), (name, got, want)
        ema = torch.load(run / "checkpoints" / "step-00000006" / "ema.pt")
        ref = torch.load(trained / "checkpoints" / "step-00000006" / "ema.pt")
        assert ema.keys() == ref.keys() and all(torch.allclose(ema[k], ref[k], atol=1e-5) for k in ref)
    meta = json.loads((tmp_path / "fsdp" / "checkpoints" / "step-00000006" / "meta.json").read_text())
    assert meta["sharded"] and (tmp_path / "fsdp" / "checkpoints" / "step-00000006" / "state").is_dir()


def test_ray_train_with_two_workers(trained, sharded_run, small_cfg, tmp_path):
    r = pks(
        "train",
        sharded_run,
        "--config",
        small_cfg,
        "--out",
        tmp_path / "run",
        "--ray-workers",
        "2",
        env={**os.environ, "RAY_ADDRESS": "local"},
    )
    assert r.returncode == 0, r.stderr[-3000:]
    got, want = losses(tmp_path / "run"), losses(trained)  # `trained`: the same config in one plain process
    assert all(abs(a - b) <= 1e-5 * abs(b) for (_, a), (_, b) in zip(got, want)) and len(got) == len(want)


def test_latent_shards_train_the_same_stream(sharded_run, small_cfg, tmp_path):
    # A latent shard holds each clip's first window (encoded once), so the pixel run it is
    # compared with takes first windows too.
    cfg = yaml.safe_load(small_cfg.read_text())
    cfg["data"]["random_window"] = False
    small_cfg = tmp_path / "first-window.yaml"
    small_cfg.write_text(yaml.safe_dump(cfg))
    r = pks("train", "encode", sharded_run, "--config", small_cfg, "--out", tmp_path / "latents")
    assert r.returncode == 0, r.stderr[-3000:]
    first = json.loads(r.stdout)
    assert first["written"] == first["shards"] > 0
    assert first["text_encoded"] == 1  # signals captions: every narrative is the empty one, encoded once
    again = json.loads(pks("train", "encode", sharded_run, "--config", small_cfg, "--out", tmp_path / "latents").stdout)
    assert again["kept"] == first["shards"] and again["written"] == 0
    for row in pq.read_table(tmp_path / "latents" / "index.parquet").to_pylist():  # ranges into the latent tars
        with open(tmp_path / "latents" / row["shard"], "rb") as f:
            f.seek(row["offset"])
            assert set(tar_sample(f.read(row["length"]), row["clip_id"])) == {
                "__key__",
                "latent.npy",
                "text.npy",
                "json",
            }
    r = pks("train", tmp_path / "latents", "--config", small_cfg, "--out", tmp_path / "run")
    assert r.returncode == 0, r.stderr[-3000:]
    # the same clips in the same order, the same noise and t: the pixel run's losses, step for step
    r = pks("train", sharded_run, "--config", small_cfg, "--out", tmp_path / "pixels")
    assert r.returncode == 0, r.stderr[-3000:]
    got, want = losses(tmp_path / "run"), losses(tmp_path / "pixels")
    assert [s for s, _ in got] == [s for s, _ in want] == [1, 2, 3, 4, 5, 6]
    # (to 1e-3: latents are stored in float16; another clip or window changes a loss by tens of %)
    assert all(abs(a - b) <= 1e-3 * abs(b) for (_, a), (_, b) in zip(got, want)), (got, want)


def decoded(path):
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def test_generate_writes_the_requested_clip_and_refuses_bad_tags(trained, sharded_run, tmp_path):
    out = tmp_path / "clip.mp4"
    r = pks(
        "generate",
        trained,
        "--tags",
        "camera=pan_left,motion=combat_dash,stage=2",
        "--narrative",
        "a dash",
        "--seed",
        "3",
        "--out",
        out,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    meta = json.loads(r.stdout)
    frames = decoded(out)  # PyAV: decord misreads frames this small
    assert len(frames) == 8 and frames[0].shape == (16, 16, 3) and meta["checkpoint_step"] == 6
    again = tmp_path / "again.mp4"
    pks(
        "generate",
        trained,
        "--tags",
        "camera=pan_left,motion=combat_dash,stage=2",
        "--narrative",
        "a dash",
        "--seed",
        "3",
        "--out",
        again,
    )
    assert all((a == b).all() for a, b in zip(decoded(again), frames))  # seeded
    report_run = tmp_path / "curated"  # the report shows generated clips under OUT/generated/
    shutil.copytree(sharded_run, report_run)
    pks("generate", trained, "--tags", "camera=tilt_up,shot=wide", "--out", report_run / "generated" / "tilt.mp4")
    assert pks("report", report_run).returncode == 0
    page = (report_run / "report.html").read_text()
    assert "<h2>Generated clips</h2>" in page and "tilt.mp4: camera=tilt_up, shot=wide" in page
    assert re.search(r"measured: camera=[a-z_+]+, deformation \d\.\d\d \(stage \d\), flags: ", page)
    for tags, message in (
        ("camera=pan_lft", "unknown tag 'pan_lft' on axis camera; valid: static, pan_left"),
        ("cam=pan_left", "unknown axis 'cam'; axes: style, motion, camera, vfx, shot, stage"),
        ("stage=7", "stage must be 0..3"),
    ):
        r = pks("generate", trained, "--tags", tags, "--out", tmp_path / "x.mp4")
        assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_a_run_keeps_its_taxonomy_version_through_a_taxonomy_bump(trained, tmp_path, monkeypatch):
    """RUN/config.yaml and every checkpoint carry the taxonomy version; generating from the run
    after a newer taxonomy ships (a tag added in front: other table sizes and tag rows) uses the
    run's version, not the newest."""
    import training.sample

    assert yaml.safe_load((trained / "config.yaml").read_text())["taxonomy_version"] == 1
    for ckpt in (trained / "checkpoints").iterdir():
        assert json.loads((ckpt / "meta.json").read_text())["taxonomy_version"] == 1
    v1 = taxonomy.load(1)
    bumped = yaml.safe_load(Path(taxonomy.loader.VERSIONS_DIR, "v1.yaml").read_text())
    bumped["version"] = 2
    bumped["axes"]["camera"]["tags"].insert(0, {"id": "crane_up", "definition": "The camera rises."})
    v2 = taxonomy.Taxonomy.from_dict(bumped)
    monkeypatch.setattr(taxonomy, "load", lambda version=None, directory=None: v1 if version == 1 else v2)
    made = training.sample.generate(trained, tmp_path / "clip.mp4", "camera=pan_left", seed=1)
    assert made["tags"] == {"camera": ["pan_left"]} and len(decoded(tmp_path / "clip.mp4")) == 8
    with pytest.raises(UserError, match="unknown tag 'crane_up'"):  # the run's vocabulary, not the newest
        training.sample.generate(trained, tmp_path / "x.mp4", "camera=crane_up")


def test_generate_writes_whole_clips_only_and_devices_are_checked(trained, sharded_run, tmp_path, monkeypatch):
    import training.sample
    from pks.videoio import Mp4Writer

    def broken(self, frame):
        raise OSError("disk full")

    monkeypatch.setattr(Mp4Writer, "write", broken)
    with pytest.raises(OSError, match="disk full"):
        training.sample.generate(trained, tmp_path / "clip.mp4", "camera=pan_left")
    assert list(tmp_path.iterdir()) == []  # neither a half clip nor a temporary file
    r = pks("generate", trained, "--device", "cpu", "--out", tmp_path / "cpu.mp4")
    assert r.returncode == 0 and len(decoded(tmp_path / "cpu.mp4")) == 8, r.stderr[-2000:]
    if not torch.cuda.is_available():
        r = pks("generate", trained, "--device", "cuda", "--out", tmp_path / "gpu.mp4")
        assert r.returncode == 2 and "no such GPU here" in r.stderr and len(r.stderr.strip().splitlines()) == 1
        r = pks(
            "train",
            "encode",
            sharded_run,
            "--config",
            CONFIG_DIR / "tiny_pixel.yaml",
            "--out",
            tmp_path / "lat",
            "--device",
            "cuda",
        )
        assert r.returncode == 2 and "no such GPU here" in r.stderr, r.stderr
    r = pks("generate", trained, "--device", "abacus", "--out", tmp_path / "x.mp4")
    assert r.returncode == 2 and "--device must be cpu, cuda or cuda:N" in r.stderr, r.stderr


def test_the_tag_channel_moves_the_camera_on_a_two_tag_toy_set():
    """pan_left vs pan_right must separate: smooth random textures slide 1 px a frame one way or
    the other, the only cue is the camera tag. After 1,000 steps of the tiny recipe (x0
    prediction, unit-scale tag tables) every sample moves the way its tag says (phase correlation
    between frames); with DiT's 0.02 tag tables, or velocity prediction, the two tags drew the same
    clips (issue 21's diagnosis, BENCHMARKS.md)."""
    import cv2
    import numpy as np

    from training.train import ema_decay_at

    T, H, W, n = 8, 16, 24, 16
    rng, g = np.random.default_rng(0), torch.Generator().manual_seed(0)

    def clips(direction):  # direction +1: the camera pans right, so the picture slides left
        out = []
        for d in direction.tolist():
            tex = cv2.resize(rng.random((6, 10, 3)).astype(np.float32), (W + 2 * T, H), interpolation=cv2.INTER_CUBIC)
            x = T if d < 0 else 0
            out.append(np.stack([tex[:, x + d * f : x + d * f + W] for f in range(T)]) * 2 - 1)
        return torch.tensor(np.stack(out)).permute(0, 4, 1, 2, 3)

    def conditions(direction, known_tags):
        tags = {a: torch.zeros(len(direction), len(TAX.axes[a].ids)) for a in taxonomy.TAG_AXES}
        for i, d in enumerate(direction.tolist()):
            tags["camera"][i, TAX.index("camera", "pan_right" if d > 0 else "pan_left")] = 1
        known = torch.zeros(len(direction), 4, dtype=torch.bool)
        known[:, taxonomy.TAG_AXES.index("camera")] = known_tags
        return tags, known

    torch.manual_seed(0)
    model = VideoDiT(
        DiTConfig(in_channels=3, patch=(2, 4, 4), dim=64, depth=2, heads=2, text_dim=8, prediction="x0"), TAX
    )
    ema = {k: v.detach().clone() for k, v in model.named_parameters()}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    text, mask, none = torch.zeros(n, 1, 8), torch.ones(n, 1, dtype=torch.bool), torch.full((n,), -1)
    for step in range(1000):
        direction = torch.randint(0, 2, (n,), generator=g) * 2 - 1
        x0 = clips(direction)
        tags, known = conditions(direction, torch.rand(n, generator=g) >= 0.1)  # guidance dropout
        t, noise = torch.sigmoid(torch.randn(n, generator=g)), torch.randn(x0.shape, generator=g)
        tt = t.view(-1, 1, 1, 1, 1)
        loss = ((model((1 - tt) * x0 + tt * noise, t, text, mask, tags, known, none, none) - (noise - x0)) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            for k, p in model.named_parameters():
                ema[k].lerp_(p, 1 - ema_decay_at(step, 0.995))
    model.load_state_dict(ema)
    shifts = []
    with torch.no_grad():
        for d in (-1, 1):
            for seed in range(6):
                x = torch.randn((1, 3, T, H, W), generator=torch.Generator().manual_seed(100 + seed))
                tags, known = conditions(torch.tensor([d, d]), torch.tensor([False, True]))  # unconditioned, tagged
                ts = torch.linspace(1, 0, 21)
                for i in range(20):
                    v = model(
                        x.expand(2, -1, -1, -1, -1),
                        ts[i].expand(2),
                        text[:2],
                        mask[:2],
                        tags,
                        known,
                        none[:2],
                        none[:2],
                    )
                    x = x + (ts[i + 1] - ts[i]) * (v[:1] + 3.0 * (v[1:] - v[:1]))  # tag guidance 3
                grey = x[0].clamp(-1, 1).mean(0).double().numpy()
                shifts.append(np.mean([cv2.phaseCorrelate(grey[f], grey[f + 1])[0][0] for f in range(T - 1)]))
    left, right = np.array(shifts[:6]), np.array(shifts[6:])
    assert (left > 0.3).all() and (right < -0.3).all(), (left, right)  # every sample, the asked direction


def test_a_model_that_memorised_one_clip_samples_that_clip():
    """The flow objective, the model and the Euler sampler fit together: trained on one clip,
    the sampler lands on it from noise (mean error a few % of the pixel range)."""
    from training.sample import sample
    from training.vae import PixelSpace

    torch.manual_seed(0)
    space = PixelSpace()
    yy, xx = torch.meshgrid(torch.arange(8), torch.arange(8), indexing="ij")  # a gradient sliding right
    clip = torch.stack([torch.stack([(xx * 30 + 16 * f) % 256, yy * 30, (xx + yy) * 15]) for f in range(4)])
    x0 = space.encode(clip.to(torch.uint8)[None])
    model = VideoDiT(DiTConfig(in_channels=3, patch=(2, 4, 4), dim=128, depth=2, heads=2, text_dim=8), TAX)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    tags = {a: torch.zeros(4, len(TAX.axes[a].ids)) for a in taxonomy.TAG_AXES}
    unknown, none = torch.zeros(4, 4, dtype=torch.bool), torch.full((4,), -1)
    text, mask = torch.zeros(4, 1, 8), torch.ones(4, 1, dtype=torch.bool)
    for _ in range(400):
        t = torch.sigmoid(torch.randn(4))
        noise = torch.randn(4, *x0.shape[1:])
        xt = (1 - t.view(-1, 1, 1, 1, 1)) * x0 + t.view(-1, 1, 1, 1, 1) * noise
        loss = ((model(xt, t, text, mask, tags, unknown, none, none) - (noise - x0)) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    class NoText:
        def states(self, texts):
            return [torch.zeros(1, 8) for _ in texts]

    cfg = load_train_config(
        "tiny_pixel",
        {
            "sample.steps": 30,
            "sample.guidance_tags": 1.0,
            "sample.guidance_text": 0.0,
            "data.frames": 4,
            "data.size": [8, 8],
            "train.shift": 1.0,
        },
    )
    out = sample(model.eval(), NoText(), space, cfg, {}, seed=1, tax=TAX)
    assert out.shape == clip.shape and (out.float() - clip.float()).abs().mean() < 0.05 * 255


def test_guidance_applies_only_inside_its_interval_of_noise_levels():
    """sample.guidance_interval [lo, hi]: the guided velocity at noise levels inside it, the
    conditional one (both scales 1) outside; [0, 1] is guidance everywhere, as before."""
    from training.sample import sample
    from training.vae import PixelSpace

    torch.manual_seed(0)
    model = VideoDiT(DiTConfig(in_channels=3, patch=(1, 4, 4), dim=32, depth=1, heads=2, text_dim=8), TAX).eval()
    for p in model.parameters():  # random weights everywhere, so every branch differs (AdaLN-zero starts at 0)
        torch.nn.init.normal_(p, std=0.1)

    class NoText:
        def states(self, texts):
            return [torch.full((1, 8), float(len(t))) for t in texts]

    small = {"sample.steps": 6, "data.frames": 2, "data.size": [8, 8], "train.shift": 1.0}
    cfg = load_train_config("tiny_pixel", {**small, "sample.guidance_tags": 3.0, "sample.guidance_text": 2.0})

    def draw(**kw):
        return sample(model, NoText(), PixelSpace(), cfg, {"camera": ["pan_left"]}, "a pan", seed=3, tax=TAX, **kw)

    everywhere, default = draw(guidance_interval=(0.0, 1.0)), draw()
    nowhere = draw(guidance_interval=(0.0, 0.0))  # t = 0 is never a sampler step
    unguided = draw(guidance_tags=1.0, guidance_text=1.0)
    upper = draw(guidance_interval=(0.5, 1.0))
    assert torch.equal(everywhere, default) and torch.equal(nowhere, unguided)
    assert not torch.equal(upper, everywhere) and not torch.equal(upper, unguided)
    with pytest.raises(UserError, match="guidance_interval"):
        load_train_config("tiny_pixel", {"sample.guidance_interval": [0.6, 0.2]})


def test_the_x0_loss_is_the_clean_clips_error():
    """train.loss_weight x0: the velocity error times t^2 is the error of the clean clip the
    velocity implies; below X0_MIN_T the weight stops shrinking (as x0 prediction's does)."""
    from training.model import X0_MIN_T
    from training.train import flow_loss

    g = torch.Generator().manual_seed(0)
    x0, noise, v = (torch.randn(3, 3, 4, 8, 8, generator=g) for _ in range(3))
    t = torch.tensor([0.9, 0.3, 0.01])
    tt = t.view(-1, 1, 1, 1, 1)
    xt = (1 - tt) * x0 + tt * noise
    x0_implied = xt - tt * v
    got = flow_loss(v, noise - x0, t, "x0")
    want = ((x0_implied - x0) ** 2).mean(dim=(1, 2, 3, 4))
    assert torch.allclose(got[:2], want[:2], rtol=1e-5)
    assert torch.allclose(got[2], want[2] * (X0_MIN_T / 0.01) ** 2, rtol=1e-5)
    assert torch.allclose(flow_loss(v, noise - x0, t), ((v - noise + x0) ** 2).mean(dim=(1, 2, 3, 4)))
    assert load_train_config("tiny").train.loss_weight == "x0"
    with pytest.raises(UserError, match="loss_weight must be velocity or x0"):
        load_train_config("tiny", {"train.loss_weight": "sigmoid"})
