"""`pks train --stage dpo`: Diffusion-DPO (Wallace et al., 2023) for the flow-matching generator,
with the Judge as the preference and the curriculum as the guard.

    pks train OUT --stage dpo --init RUN --judge judge.pt --steps N --out RUN_DPO

The policy starts from RUN's EMA weights; a frozen copy of them is the reference. For a pair
(preferred w, rejected l) under one condition, both noised with the same noise at the same t,
the loss is Diffusion-DPO's with the flow-matching velocity in place of the noise:

    d = (|v_w - pi(x_w)|^2 - |v_w - ref(x_w)|^2) - (|v_l - pi(x_l)|^2 - |v_l - ref(x_l)|^2)
    loss = -log sigmoid(-beta / 2 * d)

(squared errors are means over the latent, as in the reference code). Pairs come from:
- offline: a training clip (every curriculum stage, extreme art included) against a failure
  copy of itself (`training.failures`): the stage runs without sampling;
- online: K samples per prompt (tags, shot, stage and narrative of a validation caption) from
  the current policy, ranked by the Judge's logit, best against worst when the logits differ
  by at least `margin`.
  Pairs never cross prompts, so never the requested curriculum stage: whole-clip preferences
  drift toward low-motion clips (DenseDPO, 2025), and a pair that preferred a calmer stage 0
  clip over a stage 3 one would teach exactly that. The share of online pairs whose winner
  measured less deformation than its loser is logged, to watch for the drift inside a stage.
The run folder has the layout of `pks train`'s (config.yaml with a `dpo` section, checkpoints
with EMA weights, metrics.jsonl), so `pks generate RUN_DPO` samples from it. Resuming replays
the offline pair stream exactly; the online pool is regenerated from the resumed policy.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

import taxonomy
from pks.errors import UserError
from pks.jobconfig import JobConfig
from pks.progress import bar as progress_bar
from pks.seeded import unit
from training.checkpoint import checkpoints, load_checkpoint, remove_torn_checkpoints, save_checkpoint, trim_metrics
from training.conditioning import conditions, draws, known_axes
from training.config import DpoConfig, TrainConfig, load_run_config, write_run_config
from training.data import CurriculumLoader, Schedule, shards_root
from training.devices import default_device
from training.failures import FAILURES
from training.text import TextEncoder, pad_states, text_encoder_path
from training.train import build_model, run_taxonomy
from training.vae import latent_space

ONLINE_INDEX = 1 << 40  # stream indices of online pairs' draws (noise, t): never an offline sample's


def dpo_loss(
    pol_w, pol_l, ref_w, ref_l, target_w, target_l, beta: float, sft_weight: float = 0.0
) -> tuple[torch.Tensor, dict]:
    """Diffusion-DPO on velocities. Returns the loss and its diagnostics: implicit accuracy (the
    share of pairs whose preferred sample the policy now fits better, relative to the reference)
    and the mean implicit reward margin, and the velocity error on the preferred clips, the
    policy's and the reference's. DPO alone can lower both clips' likelihood as long as the
    rejected one falls faster; `sft_weight` adds the flow-matching loss on the preferred clips
    (as RPO / DPO-Positive do) to hold their fit."""

    def err(pred, target):
        return ((pred.float() - target) ** 2).mean(dim=tuple(range(1, target.dim())))

    fit_w, ref_fit_w = err(pol_w, target_w), err(ref_w, target_w)
    d = (fit_w - ref_fit_w) - (err(pol_l, target_l) - err(ref_l, target_l))
    inside = -0.5 * beta * d
    loss = -F.logsigmoid(inside).mean() + sft_weight * fit_w.mean()
    return loss, {
        "implicit_acc": float((inside.detach() > 0).float().mean()),
        "margin": float(inside.detach().mean()),
        # how well the preferred clips are still fitted: drift shows here
        "fit_w": float(fit_w.detach().mean()),
        "ref_fit_w": float(ref_fit_w.mean()),
    }


def failure_copy(video: torch.Tensor, seed: int, index: int) -> tuple[torch.Tensor, str]:
    """A failure copy of one uint8 clip [T, 3, H, W]: the kind and its randomness drawn from the
    sample's place in the stream, so a resumed run makes the same copy."""
    rng = np.random.default_rng(int(unit(seed, "dpo-failure", index) * 2**62))
    kinds = sorted(FAILURES)
    kind = kinds[int(rng.integers(len(kinds)))]
    bad = FAILURES[kind](video.permute(0, 2, 3, 1).numpy(), rng)
    return torch.from_numpy(np.ascontiguousarray(bad)).permute(0, 3, 1, 2), kind


# ---- prompts and online pairs ---------------------------------------------------------------
def prompts_from(root: Path, n: int, seed: int, tax) -> list[dict]:
    """Up to n prompts (the labelled axes' tags, shot, stage, narrative) from the validation
    split's captions (the training split where there is none), spread over the stages."""
    import pyarrow.parquet as pq
    import webdataset as wds

    index = pq.read_table(root / "index.parquet").to_pylist()
    split = "val" if any(r["split"] == "val" for r in index) else "train"
    found = []
    for s in wds.WebDataset(
        sorted({str(root / r["shard"]) for r in index if r["split"] == split}), shardshuffle=False, empty_check=False
    ):
        rec = json.loads(s["json"])
        cap = rec.get("caption") or {}
        known = known_axes(rec)
        found.append(
            {
                "tags": {a: list(cap.get(a) or []) for a, k in zip(taxonomy.TAG_AXES, known) if k},
                "shot": cap.get("shot") if cap.get("shot") in tax.axes[taxonomy.SHOT_AXIS].ids else None,
                "stage": rec["curriculum_stage"],
                "narrative": cap.get("narrative", ""),
                "clip_id": rec["clip_id"],
            }
        )
    found.sort(key=lambda p: unit(seed, "dpo-prompt", p["clip_id"]))
    by_stage = [[p for p in found if p["stage"] == k] for k in range(4)]
    picked: list[dict] = []
    while len(picked) < n and any(by_stage):  # round robin over the stages
        for lst in by_stage:
            if lst and len(picked) < n:
                picked.append(lst.pop(0))
    return picked


def prompt_condition(prompts: list[dict], tax) -> dict:
    """The model's conditioning for prompts, as `sample` builds its fully conditioned row."""
    tags = {a: torch.zeros(len(prompts), len(tax.axes[a].ids)) for a in taxonomy.TAG_AXES}
    for i, p in enumerate(prompts):
        for a, ids in p["tags"].items():
            for t in ids:
                tags[a][i, tax.index(a, t)] = 1
    known = torch.tensor([[a in p["tags"] for a in taxonomy.TAG_AXES] for p in prompts])
    shot = torch.tensor([tax.index(taxonomy.SHOT_AXIS, p["shot"]) if p["shot"] else -1 for p in prompts])
    stage = torch.tensor([p["stage"] for p in prompts])
    return {"tags": tags, "known": known, "shot": shot, "stage": stage, "texts": [p["narrative"] for p in prompts]}


def online_pairs(
    model, text_encoder, space, cfg: TrainConfig, prompts: list[dict], judge, acfg: JobConfig, round_: int, tax
) -> tuple[list[dict], dict]:
    """K samples per prompt from the policy, scored by the Judge; best vs worst per prompt when
    their scores differ by at least the margin. Returns the pairs and the round's statistics."""
    from training.judge import judge_frames
    from training.sample import sample

    dc, pc = cfg.dpo, cfg.data
    assert dc is not None  # a preference run's config has its section
    pairs, scores, logits_seen, less = [], [], [], []
    was = model.training
    model.eval()
    for i, p in enumerate(prompts):
        got = []
        for k in range(dc.k):
            seed = int(unit(cfg.train.seed, "dpo-online", round_, i, k) * 2**31)
            video = sample(
                model,
                text_encoder,
                space,
                cfg,
                p["tags"],
                p["narrative"],
                p["shot"],
                p["stage"],
                seed,
                steps=dc.sample_steps,
                tax=tax,
            ).cpu()  # uint8 [T, 3, H, W], beside the loader's
            s, logit, deform = judge_frames(judge, video.permute(0, 2, 3, 1).numpy(), pc.fps, acfg)
            got.append((logit, deform, video, s))
        scores += [g[3] for g in got]
        logits_seen += [g[0] for g in got]
        # Ranked by logit: a young generator's samples all score near 0, and the logits still
        # tell its better samples from its worse.
        best, worst = max(got, key=lambda g: g[0]), min(got, key=lambda g: g[0])
        if best[0] - worst[0] >= dc.margin:
            pairs.append({"prompt": p, "w": best[2], "l": worst[2]})
            less.append(best[1] < worst[1])
    model.train(was)
    return pairs, {
        "judge_mean": float(np.mean(scores)) if scores else float("nan"),
        "judge_logit_mean": float(np.mean(logits_seen)) if logits_seen else float("nan"),
        "pairs": len(pairs),
        "winner_less_deformed": float(np.mean(less)) if less else float("nan"),
    }


def pair_loss(
    policy,
    reference,
    text_encoder,
    space,
    cfg: TrainConfig,
    cond_parts: list[dict],
    videos_w: list,
    videos_l: list,
    indices: list[int],
) -> tuple[torch.Tensor, dict]:
    """The DPO loss of a batch of pairs: uint8 clips [T, 3, H, W] preferred and rejected, their
    conditions (parts to concatenate), and stream indices that seed one noise and t per pair."""
    device = next(policy.parameters()).device
    tc, dpo = cfg.train, cfg.dpo
    assert dpo is not None  # a preference run's config has its section
    latent_shape = space.latent_shape(cfg.data.frames, cfg.data.size)
    cond: dict[str, Any] = {
        k: (torch.cat([c[k] for c in cond_parts]) if k != "texts" else sum((c[k] for c in cond_parts), []))
        for k in ("known", "shot", "stage", "texts")
    }
    cond["tags"] = {a: torch.cat([c["tags"][a] for c in cond_parts]) for a in taxonomy.TAG_AXES}
    x_w = space.encode(torch.stack(videos_w)).to(device)
    x_l = space.encode(torch.stack(videos_l)).to(device)
    d = [draws(tc.seed, i, latent_shape, cfg) for i in indices]
    noise = torch.stack([s["noise"] for s in d]).to(device)
    t = torch.stack([s["t"] for s in d]).to(device)
    tt = t.view(-1, 1, 1, 1, 1)
    x = torch.cat([(1 - tt) * x_w + tt * noise, (1 - tt) * x_l + tt * noise])
    target = torch.cat([noise - x_w, noise - x_l])
    text, mask = pad_states(text_encoder.states(cond["texts"]))
    args = (
        torch.cat([t, t]),
        text.repeat(2, 1, 1).to(device),
        mask.repeat(2, 1).to(device),
        {a: v.repeat(2, 1).to(device) for a, v in cond["tags"].items()},
        cond["known"].repeat(2, 1).to(device),
        cond["shot"].repeat(2).to(device),
        cond["stage"].repeat(2).to(device),
    )
    pred = policy(x, *args)
    with torch.no_grad():
        ref = reference(x, *args)
    n = len(indices)
    return dpo_loss(
        pred[:n],
        pred[n:],
        ref[:n],
        ref[n:],
        target[:n],
        target[n:],
        dpo.beta,
        dpo.sft_weight,
    )


def offline_pairs(batch: dict, cfg: TrainConfig, tax, latent_shape) -> tuple[dict, list, list, list[int]]:
    """A loader batch as pairs: each clip preferred over its failure copy, under the clip's own
    (guidance-dropped) condition."""
    seed = cfg.train.seed
    samples = [draws(seed, int(i), latent_shape, cfg) for i in batch["index"]]
    indices = batch["index"].tolist()
    return (
        conditions(batch, samples, tax, cfg.tag_channel),
        list(batch["video"]),
        [failure_copy(v, seed, i)[0] for v, i in zip(batch["video"], indices)],
        indices,
    )


# ---- the loop -------------------------------------------------------------------------------
def dpo_config(dpo: DpoConfig, overrides: dict[str, Any]) -> DpoConfig:
    """The section with the values given (None: not given), checked again (DpoConfig)."""
    return dataclasses.replace(dpo, **{k: v for k, v in overrides.items() if v is not None})


def train_dpo(
    source: str | Path,
    init: str | Path,
    judge_path: str | Path | None,
    out: str | Path,
    dpo: DpoConfig,
    acfg: JobConfig | None = None,
    resume: bool = False,
    progress: bool = True,
) -> dict:
    """Run the preference stage from the run `init` into `out`. `dpo` holds the stage's settings
    (the `dpo` section of a training config). Returns the last logged metrics."""
    from pks.config import load_config

    init, out = Path(init), Path(out)
    root = shards_root(source)
    if (root / "encode.json").is_file():
        raise UserError("the preference stage makes failure copies and samples in pixels: give raw shards, not latents")
    if not checkpoints(init) or not (init / "config.yaml").is_file():
        raise UserError(f"no trained run in {init} (pass --init a pks train run folder)")
    if dpo.pairs != "offline" and not judge_path:
        raise UserError(f"dpo.pairs {dpo.pairs} ranks samples with the Judge: pass --judge judge.pt")
    if judge_path and not Path(judge_path).is_file():
        raise UserError(f"no such Judge file: {judge_path}")
    if checkpoints(out) and not resume:
        raise UserError(f"{out} already holds a run; pass --resume to continue it, or choose another --out")
    cfg = load_run_config(init)
    if not cfg.tag_channel:
        raise UserError(f"{init} is the text-only ablation: the preference stage runs on the dual-channel model")
    cfg = dataclasses.replace(cfg, dpo=dataclasses.replace(dpo, init=str(init.resolve())))
    if cfg.latent.kind == "learned" and not cfg.latent.path:
        # the starting run's VAE, kept where it is
        cfg = dataclasses.replace(cfg, latent=dataclasses.replace(cfg.latent, path=str((init / "vae").resolve())))
    # the starting run's (v1 before versions were recorded)
    cfg = dataclasses.replace(cfg, taxonomy_version=run_taxonomy(cfg).version)
    acfg = acfg or load_config()
    out.mkdir(parents=True, exist_ok=True)
    if not cfg.text_encoder.path and not (out / "text_encoder").is_dir():
        shutil.copytree(text_encoder_path(cfg, init), out / "text_encoder")  # the tiny one RUN built
    write_run_config(cfg, out)
    remove_torn_checkpoints(out)

    tax = run_taxonomy(cfg)
    device = default_device()
    text_encoder = TextEncoder(text_encoder_path(cfg, out), cfg.text_encoder.max_length, device)
    space = latent_space(cfg, device)
    tc, dc, data = cfg.train, cfg.dpo, cfg.data
    assert dc is not None  # set above
    latent_shape = space.latent_shape(data.frames, data.size)
    policy = build_model(cfg, tax).to(device)
    policy.load_state_dict(torch.load(checkpoints(init)[-1] / "ema.pt", map_location="cpu", weights_only=True))
    reference = copy.deepcopy(policy).eval().requires_grad_(False)
    ema = {k: v.detach().clone() for k, v in policy.named_parameters()}
    opt = torch.optim.AdamW(policy.parameters(), lr=dc.lr, weight_decay=0.0)
    start = load_checkpoint(checkpoints(out)[-1], policy, ema, opt) if resume and checkpoints(out) else 0
    metrics_path = out / "metrics.jsonl"
    trim_metrics(metrics_path, start)

    n_online = {"offline": 0, "online": dc.batch, "mixed": dc.batch // 2}[dc.pairs]
    n_offline = dc.batch - n_online
    batches = None
    if n_offline:
        sched = data.schedule
        batches = iter(
            CurriculumLoader(
                root,
                frames=data.frames,
                fps=data.fps,
                size=data.size,
                batch_size=n_offline,
                seed=tc.seed + 1,
                start_step=start,
                steps=dc.steps - start,
                random_window=data.random_window,
                # the stages as evenly as the data allows: art of every level is a winner
                schedule=Schedule((0.25,) * 4, (0.25,) * 4, sched.steps),
                taxonomy_version=cfg.taxonomy_version,
            )
        )
    judge = None
    if judge_path:
        from training.judge import load

        judge = load(Path(judge_path))
    prompts = prompts_from(root, dc.prompts, tc.seed, tax) if n_online else []
    if n_online and not prompts:
        raise UserError(f"no captioned clips in {root} to prompt the online pairs with")
    pool: list[dict] = []
    pool_stats: dict = {}
    bar = progress_bar(dc.steps, "pks train --stage dpo", "step", initial=start, enabled=progress)
    window = {"loss": 0.0, "acc": 0.0, "margin": 0.0, "n": 0, "t0": time.perf_counter()}
    last = {}
    policy.train()
    for step in range(start, dc.steps):
        videos_w: list = []
        videos_l: list = []
        indices: list[int] = []
        cond_parts: list[dict] = []
        if n_offline:
            assert batches is not None  # made above when there are offline pairs
            cond, videos_w, videos_l, indices = offline_pairs(next(batches), cfg, tax, latent_shape)
            cond_parts.append(cond)
        if n_online:
            if (step - start) % dc.refresh == 0:
                pool, pool_stats = online_pairs(
                    policy, text_encoder, space, cfg, prompts, judge, acfg, step // dc.refresh, tax
                )
                pool_stats = {f"online_{k}": v for k, v in pool_stats.items()}
            if pool:
                order = np.random.default_rng(int(unit(tc.seed, "dpo-pool", step) * 2**62)).permutation(len(pool))
                chosen = [pool[j] for j in order[:n_online]]
                cond_parts.append(prompt_condition([c["prompt"] for c in chosen], tax))
                for j, c in enumerate(chosen):
                    videos_w.append(c["w"])
                    videos_l.append(c["l"])
                    indices.append(ONLINE_INDEX + step * dc.batch + j)
        if videos_w:  # (online only, a round where the Judge found no pair: nothing to prefer)
            loss, stats = pair_loss(
                policy, reference, text_encoder, space, cfg, cond_parts, videos_w, videos_l, indices
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(policy.parameters(), tc.grad_clip)
            opt.step()
            with torch.no_grad():
                for k, p in policy.named_parameters():
                    ema[k].lerp_(p.detach(), 1 - dc.ema_decay)
            window["loss"] += loss.item()
            window["acc"] += stats["implicit_acc"]
            window["margin"] += stats["margin"]
            window["n"] += 1
        done = step + 1
        if done % tc.log_every == 0 or done == dc.steps:
            count = max(1, window["n"])
            last = {
                "step": done,
                "loss": window["loss"] / count if window["n"] else None,
                "implicit_acc": window["acc"] / count,
                "margin": window["margin"] / count,
                "pairs_offline": n_offline,
                "steps_per_s": window["n"] / (time.perf_counter() - window["t0"]),
                **pool_stats,
            }
            with open(metrics_path, "a") as f:
                f.write(json.dumps(last) + "\n")
            window = {"loss": 0.0, "acc": 0.0, "margin": 0.0, "n": 0, "t0": time.perf_counter()}
        if done % tc.ckpt_every == 0 or done == dc.steps:
            save_checkpoint(
                out,
                done,
                policy,
                ema,
                opt,
                sharded=False,
                rank=0,
                keep=tc.keep_ckpts,
                meta={"taxonomy_version": cfg.taxonomy_version},
            )
        bar.update(1)
        bar.set_postfix(last and {"loss": last["loss"], "acc": last["implicit_acc"]})
    bar.close()
    return last
