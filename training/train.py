"""`pks train`: the dual-channel DiT on curriculum shards, in a loop as plain as nanoGPT's.

    pks train OUT/shards --config tiny --steps 200 --out RUN        # one process (CPU or GPU)
    torchrun --nproc_per_node 8 -m pks.cli train ... --out RUN      # DDP, or FSDP2 with train.parallel: fsdp
    pks train ... --ray-workers 16 --gpu                             # Ray Train on the curation cluster

Rectified flow: x_t = (1 - t) x_0 + t noise, the model predicts the velocity noise - x_0;
t is logit-normal with a resolution shift. AdamW, warmup + cosine, gradient clipping, EMA,
bf16 autocast on GPU, optional activation checkpointing and torch.compile.

Every random draw of a sample (its timestep, noise and guidance dropout) is seeded by the
sample's place in the stream, and the stream itself is a pure function of the seed, so a run
resumed from a checkpoint, or spread over any number of ranks, computes exactly the same
steps. Checkpoints are directories written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import yaml

import taxonomy
from pks.errors import UserError
from pks.progress import bar as progress_bar
from pks.typedconfig import build
from training.checkpoint import (
    checkpoints,
    load_checkpoint,
    remove_torn_checkpoints,
    save_checkpoint,
    trim_metrics,
    unwrap,
)
from training.conditioning import conditions, draws
from training.config import LABEL, LatentConfig, LoopConfig, TrainConfig, write_run_config
from training.data import CurriculumLoader, Schedule, refuse_stale, shards_root
from training.devices import setup_distributed
from training.model import X0_MIN_T, VideoDiT, flops_per_step, model_config
from training.text import pad_states, text_encoder_path
from training.vae import latent_space

PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}  # dense tensor-core peaks
log = logging.getLogger(__name__)


# ---- parts -------------------------------------------------------------------------------
def build_model(cfg: TrainConfig, tax=None) -> VideoDiT:
    torch.manual_seed(cfg.train.seed)
    return VideoDiT(model_config(cfg.model, cfg.arch), tax or run_taxonomy(cfg))


def run_taxonomy(cfg: TrainConfig):
    """The taxonomy a run was trained with (its tables are sized by it, its tags named by it):
    the version in its config; a run from before versions were recorded used v1, the only one."""
    return taxonomy.load(cfg.taxonomy_version or 1)


def pin_taxonomy(cfg: TrainConfig, run: Path) -> TrainConfig:
    """The config with its taxonomy version fixed: the one a resumed run already has, else the
    config's own, else the newest (recorded in RUN/config.yaml and every checkpoint)."""
    saved = run / "config.yaml"
    version = yaml.safe_load(saved.read_text()).get("taxonomy_version") if saved.is_file() else None
    version = version or cfg.taxonomy_version or taxonomy.load().version
    return dataclasses.replace(cfg, taxonomy_version=int(version))


def ema_decay_at(step: int, decay: float) -> float:
    """EMA warm-up: an average over at most the steps taken so far (decay (1 + k) / (10 + k) early
    on), so the EMA of a short run is not mostly its random initialisation (0.995 after 150 steps
    still weighs the init 0.47)."""
    return min(decay, (1 + step) / (10 + step))


def flow_loss(pred: torch.Tensor, target: torch.Tensor, t: torch.Tensor, weight: str = "velocity") -> torch.Tensor:
    """Per-sample loss on velocities [B, C, T, H, W] at times t [B]. `velocity`: their mean
    squared error. `x0`: the same error times t^2, which is the error of the clean clip the
    velocity implies (x0 = x_t - t v): it weighs the noisy timesteps, where layout and camera
    motion are decided, as much as the clean ones (the velocity error grows as 1/t^2 there)."""
    per_sample = ((pred - target) ** 2).mean(dim=(1, 2, 3, 4))
    if weight == "x0":
        per_sample = per_sample * t.clamp(min=X0_MIN_T) ** 2
    return per_sample


def lr_at(step: int, tc: LoopConfig) -> float:
    """Linear warmup, then cosine from lr down to min_lr at the last step."""
    if step < tc.warmup:
        return tc.lr * (step + 1) / tc.warmup
    a = min(1.0, (step - tc.warmup) / max(1, tc.steps - tc.warmup))
    return tc.min_lr + 0.5 * (tc.lr - tc.min_lr) * (1 + math.cos(math.pi * a))


def iter_raw(root: Path):
    """Raw samples of the first shard of a shards folder (to read a sample's shapes)."""
    import pyarrow.parquet as pq
    import webdataset as wds

    first = pq.read_table(root / "index.parquet", columns=["shard"]).column("shard")[0].as_py()
    return iter(wds.WebDataset(str(root / first), shardshuffle=False, empty_check=False))


# ---- the loop ----------------------------------------------------------------------------
def train(
    source: str | Path,
    run: str | Path,
    cfg: TrainConfig,
    resume: bool = False,
    progress: bool = True,
    allow_stale: bool = False,
) -> dict:
    """Train (or resume) a run. Returns the last logged metrics. Shards whose records no longer
    match their run's manifest are refused unless allow_stale."""
    rank, world, device = setup_distributed()
    run = Path(run)
    root = shards_root(source)
    if not allow_stale:
        refuse_stale(root)  # before anything is built, and the loader need not check again
    latents = (root / "encode.json").is_file()  # latent shards from `pks train encode`
    if latents:
        enc = json.loads((root / "encode.json").read_text())
        if not cfg.tag_channel:
            raise UserError("the text-only ablation folds tags into the narrative: train it on raw shards")
        cfg = dataclasses.replace(  # the data and encoders are the ones the latents were made with
            cfg,
            latent=build(LatentConfig, enc["latent"], LABEL, "latent."),
            text_encoder=dataclasses.replace(cfg.text_encoder, path=enc["text_encoder"]),
            data=dataclasses.replace(cfg.data, frames=enc["frames"], fps=enc["fps"], size=tuple(enc["size"])),
        )
    cfg = pin_taxonomy(cfg, run)
    tc, dc = cfg.train, cfg.data
    if rank == 0:
        run.mkdir(parents=True, exist_ok=True)
        if checkpoints(run) and not resume:
            raise UserError(f"{run} already holds a run; pass --resume to continue it, or choose another --out")
        remove_torn_checkpoints(run)
        write_run_config(cfg, run)
    if dist.is_initialized():
        dist.barrier()
    tax = run_taxonomy(cfg)
    from training.text import TextEncoder

    if latents:  # no VAE or text encoder in memory: their outputs are in the shards
        from training.encode import EMPTY_TEXT

        text_encoder, space = None, None
        empty_text = torch.from_numpy(np.load(root / EMPTY_TEXT).astype(np.float32))
        text_dim = empty_text.shape[-1]
        latent_shape = tuple(np.load(io.BytesIO(next(iter_raw(root)).get("latent.npy"))).shape)
    else:
        te_path = text_encoder_path(cfg, run) if rank == 0 else None
        if dist.is_initialized():
            holder = [te_path]
            dist.broadcast_object_list(holder, src=0)
            te_path = holder[0]
        assert te_path is not None  # rank 0's, broadcast to the others
        text_encoder = TextEncoder(te_path, cfg.text_encoder.max_length, device)
        text_dim = text_encoder.dim
        if cfg.latent.kind == "learned":
            ensure_learned_vae(root, run, cfg, device, rank, progress)
        space = latent_space(cfg, device, run)
        latent_shape = space.latent_shape(dc.frames, dc.size)

    model = build_model(cfg, tax).to(device)
    if model.cfg.in_channels != latent_shape[0]:
        raise UserError(
            f"model {cfg.model} reads {model.cfg.in_channels} latent channels, the latent space "
            f"({cfg.latent.kind}) has {latent_shape[0]}: set arch.in_channels"
        )
    if model.cfg.text_dim != text_dim:
        raise UserError(
            f"model {cfg.model} reads text states of width {model.cfg.text_dim}, the text encoder gives {text_dim}"
        )
    model.grad_checkpointing = tc.grad_checkpointing
    sharded = world > 1 and tc.parallel == "fsdp"
    if sharded:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh(device.type, (world,))
        for block in model.blocks:
            fully_shard(block, mesh=mesh)
        fully_shard(model, mesh=mesh)
    ema = {k: v.detach().clone() for k, v in model.named_parameters()}
    decay_params = [p for n, p in model.named_parameters() if p.dim() >= 2]
    other_params = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay_params, "weight_decay": tc.weight_decay}, {"params": other_params, "weight_decay": 0.0}],
        lr=tc.lr,
        betas=tc.betas,
    )
    start = 0
    if resume and checkpoints(run):
        start = load_checkpoint(checkpoints(run)[-1], model, ema, opt)
    if world > 1 and not sharded:
        # (wrapped in place: called and saved as the model is; unwrap() reaches the VideoDiT)
        model = torch.nn.parallel.DistributedDataParallel(  # type: ignore[assignment]
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if tc.compile:
        model = torch.compile(model)  # type: ignore[assignment]  # (as above)
    metrics_path = run / "metrics.jsonl"
    if rank == 0:
        trim_metrics(metrics_path, start)

    sched = dc.schedule
    from training.encode import LatentLoader

    try:
        loader = (LatentLoader if latents else CurriculumLoader)(
            root,
            frames=dc.frames,
            fps=dc.fps,
            size=dc.size,
            batch_size=dc.batch_size,
            seed=tc.seed,
            start_step=start,
            steps=tc.steps - start,
            schedule=Schedule(tuple(sched.start), tuple(sched.end), sched.steps),
            random_window=dc.random_window,
            camera_moves=dc.camera_moves.rate,
            move_travel=dc.camera_moves.travel,
            mirror=dc.mirror,
            rank=rank,
            world_size=world,
            split_batches=True,
            taxonomy_version=cfg.taxonomy_version,
            cache_mb=dc.cache_mb,
            allow_stale=True,
        )
    except ValueError as e:  # an old index, no clip long enough for the window: the user's to fix
        raise UserError(str(e)) from None
    if rank == 0 and progress and loader.left_out:
        log.warning(
            f"pks train: {loader.left_out} of {loader.left_out + int(loader.sizes.sum())} clips are shorter "
            f"than {dc.frames} frames at {dc.fps} fps and stay out of the stream"
        )
    batches = torch.utils.data.DataLoader(loader, batch_size=None, num_workers=dc.workers)
    tokens = math.prod(latent_shape[1:]) // math.prod(model_cfg(model).patch)
    flops = flops_per_step(model_cfg(model), tokens, cfg.text_encoder.max_length, dc.batch_size)
    peak = next(
        (v for k, v in PEAK_BF16_FLOPS.items() if device.type == "cuda" and k in torch.cuda.get_device_name(device)),
        None,
    )
    writer = None
    if rank == 0:
        try:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(run / "tensorboard"))
        except ImportError:  # tensorboard is optional
            writer = None
    bar = progress_bar(tc.steps, "pks train", "step", initial=start, enabled=rank == 0 and progress)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda" and tc.bf16)
    last: dict = {}
    window: dict[str, Any] = {"loss": 0.0, "n": 0, "stage": np.zeros((4, 2)), "t0": time.perf_counter()}
    model.train()
    for batch in batches:
        step = batch["step"]
        for g in opt.param_groups:
            g["lr"] = lr_at(step, tc)
        samples = [draws(tc.seed, int(i), latent_shape, cfg) for i in batch["index"]]
        cond = conditions(batch, samples, tax, cfg.tag_channel)
        if latents:
            x0 = batch["latent"].to(device)
            states = [empty_text if d["drop_text"] else s for d, s in zip(samples, batch["text_states"])]
        else:
            assert space is not None and text_encoder is not None  # made above without latents
            x0 = space.encode(batch["video"]).to(device)
            states = text_encoder.states(cond["texts"])
        noise = torch.stack([d["noise"] for d in samples]).to(device)
        t = torch.stack([d["t"] for d in samples]).to(device)
        tt = t.view(-1, 1, 1, 1, 1)
        xt, target = (1 - tt) * x0 + tt * noise, noise - x0
        text, mask = pad_states(states)
        with autocast:
            pred = model(
                xt,
                t,
                text.to(device),
                mask.to(device),
                {a: v.to(device) for a, v in cond["tags"].items()},
                cond["known"].to(device),
                cond["shot"].to(device),
                cond["stage"].to(device),
            )
        per_sample = flow_loss(pred.float(), target, t, tc.loss_weight)
        loss = per_sample.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
        opt.step()
        with torch.no_grad():
            decay = ema_decay_at(step, tc.ema_decay)
            for k, p in model.named_parameters():
                ema[k.removeprefix("_orig_mod.").removeprefix("module.")].lerp_(p.detach(), 1 - decay)
        # Loss per curriculum stage, summed over ranks for the log.
        st = np.zeros((4, 2))
        for s, v in zip(batch["stage"].tolist(), per_sample.detach().cpu().tolist()):
            st[s] += (v, 1)
        window["loss"] += loss.item() * len(per_sample)
        window["n"] += len(per_sample)
        window["stage"] += st
        done = step + 1
        if done % tc.log_every == 0 or done == tc.steps:
            stats = torch.tensor([window["loss"], window["n"], *window["stage"].ravel()], dtype=torch.float64)
            if dist.is_initialized():
                dist.all_reduce(stats)
            dt = time.perf_counter() - window["t0"]
            steps_done = window["n"] * world / dc.batch_size
            stage = stats[2:].view(4, 2)
            last = {
                "step": done,
                "loss": float(stats[0] / stats[1]),
                "lr": lr_at(step, tc),
                "grad_norm": float(norm),
                "stage_loss": {str(k): float(stage[k, 0] / stage[k, 1]) for k in range(4) if stage[k, 1]},
                "steps_per_s": steps_done / dt,
                "tokens_per_s": steps_done * dc.batch_size * tokens / dt,
                "tflops": steps_done * flops / dt / 1e12,
            }
            if peak:
                last["mfu"] = steps_done * flops / dt / (peak * world)
            if device.type == "cuda":
                last["peak_memory_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
            if rank == 0:
                with open(metrics_path, "a") as f:
                    f.write(json.dumps(last) + "\n")
                if writer:
                    for k, v in last.items():
                        if isinstance(v, dict):
                            writer.add_scalars(k, v, done)
                        elif k != "step":
                            writer.add_scalar(k, v, done)
            window = {"loss": 0.0, "n": 0, "stage": np.zeros((4, 2)), "t0": time.perf_counter()}
        bar.update(1)
        if last:
            bar.set_postfix(loss=f"{last['loss']:.4f}", steps_s=f"{last['steps_per_s']:.2f}")
        if done % tc.ckpt_every == 0 or done == tc.steps:
            save_checkpoint(
                run,
                done,
                model,
                ema,
                opt,
                sharded,
                rank,
                tc.keep_ckpts,
                {"taxonomy_version": cfg.taxonomy_version},
            )
    bar.close()
    if writer:
        writer.close()
    return last


def vae_stream(root: Path, cfg: TrainConfig) -> CurriculumLoader:
    """The learned VAE's training clips: every curriculum stage alike (the VAE must draw all of
    them), and the same camera moves as the DiT's stream. The DiT learns from the latents of the
    moved clips, so the VAE must have learned to redraw them: on the two-tag toy a VAE trained on
    footage halves a pan's shift (training/toy.py, BENCHMARKS.md issue 21)."""
    lc, dc = cfg.latent, cfg.data
    return CurriculumLoader(
        root,
        frames=dc.frames,
        fps=dc.fps,
        size=dc.size,
        batch_size=lc.batch_size,
        seed=cfg.train.seed,
        steps=lc.steps,
        schedule=Schedule((1, 1, 1, 1), (1, 1, 1, 1), 1),
        random_window=dc.random_window,
        camera_moves=dc.camera_moves.rate if lc.camera_moves is None else lc.camera_moves,
        move_travel=dc.camera_moves.travel,
        mirror=dc.mirror,
        taxonomy_version=cfg.taxonomy_version,
        cache_mb=dc.cache_mb,
        allow_stale=True,
    )


def ensure_learned_vae(root: Path, run: Path, cfg: TrainConfig, device, rank: int, progress: bool) -> None:
    """The first stage of a `learned` run: train the small VAE on the run's clips into RUN/vae,
    unless it is there (a resumed run) or latent.path names one (an earlier run's, reused).
    Rank 0 trains it; the other ranks wait."""
    from training.clipvae import META, train_vae
    from training.vae import learned_vae_folder

    folder = learned_vae_folder(cfg, run)
    if rank == 0 and not (folder / META).is_file():
        if cfg.latent.path:
            raise UserError(f"latent.path {folder} holds no trained VAE (a run's vae/ folder)")
        lc = cfg.latent
        meta = train_vae(
            torch.utils.data.DataLoader(vae_stream(root, cfg), batch_size=None),
            folder,
            lc,
            device,
            cfg.train.seed,
            show=progress,
        )
        log.info(f"pks train: trained the VAE in {meta['seconds']:.0f} s into {folder}")
    if dist.is_initialized():
        dist.barrier()


def model_cfg(model):
    return unwrap(model).cfg
