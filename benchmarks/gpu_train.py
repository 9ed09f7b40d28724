"""The generator's speed on a GPU: `small` with bf16 autocast and torch.compile, prepared to run in
one call on a lent card (nothing is downloaded: the VAE and text encoder are random, built from
their configs, which costs the same FLOPs as real weights).

    python benchmarks/gpu_train.py [--steps 200] [--frames 17,33,49] [--work DIR]
    python benchmarks/gpu_train.py --smoke      # the same code path on the CPU with `tiny`, in seconds

1. Synthetic latents: the training step alone (forward, backward, AdamW, EMA-free) on random
   latents and text states of the config's shapes, for each frame count: step time, tokens/s,
   TFLOP/s, MFU against the card's dense bf16 peak, peak memory.
2. Real shards: synthesised footage curated into shards, encoded once (`pks train encode`, a
   random Wan VAE with 16 latent channels), then `pks train` on the latent shards for --steps:
   the trainer's own tokens/s, MFU and peak memory from its metrics.jsonl (loader included).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from report import emit  # noqa: E402


def peak_flops(device: torch.device) -> float | None:
    from training.train import PEAK_BF16_FLOPS

    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), None)


def synthetic(cfg, frames: int, steps: int, device: torch.device, compile_: bool) -> dict:
    """Time the training step on random latents of `frames` video frames."""
    import taxonomy
    from training.model import flops_per_step
    from training.train import build_model
    from training.vae import PixelSpace

    tax = taxonomy.load()
    dc = cfg.data
    if cfg.latent.kind == "pixel":
        shape = PixelSpace().latent_shape(frames, dc.size)
    else:  # Wan: 4x in time, 8x in space, 16 channels
        shape = (16, (frames - 1) // 4 + 1, dc.size[0] // 8, dc.size[1] // 8)
    model = build_model(cfg, tax).to(device)
    model.grad_checkpointing = cfg.train.grad_checkpointing
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    step_fn = torch.compile(model) if compile_ else model
    b, L = dc.batch_size, cfg.text_encoder.max_length
    g = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn((b, *shape), generator=g).to(device)
    text = torch.randn((b, L, model.cfg.text_dim), generator=g).to(device)
    mask = torch.ones(b, L, dtype=torch.bool, device=device)
    tags = {a: torch.zeros(b, len(tax.axes[a].ids), device=device) for a in taxonomy.TAG_AXES}
    known = torch.ones(b, len(taxonomy.TAG_AXES), dtype=torch.bool, device=device)
    shot = stage = torch.zeros(b, dtype=torch.long, device=device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")

    def one():
        t = torch.rand(b, device=device)
        with autocast:
            loss = (step_fn(x, t, text, mask, tags, known, shot, stage).float() - x).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    warm = min(20, steps)
    for _ in range(warm):  # compile and allocator warm-up
        one()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        one()
    if device.type == "cuda":
        torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / steps
    tokens = math.prod(shape[1:]) // math.prod(model.cfg.patch)
    flops = flops_per_step(model.cfg, tokens, L, b)
    peak = peak_flops(device)
    return {
        "frames": frames,
        "tokens": tokens,
        "step_s": dt,
        "tokens_per_s": b * tokens / dt,
        "tflops": flops / dt / 1e12,
        "mfu": flops / dt / peak if peak else None,
        "peak_memory_gb": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
    }


def pks(*args) -> str:
    r = subprocess.run([sys.executable, "-m", "pks.cli", *map(str, args)], capture_output=True, text=True, cwd=ROOT)
    if r.returncode:
        raise SystemExit(f"pks {' '.join(map(str, args))} failed:\n{r.stderr[-3000:]}")
    return r.stdout


def real_shards(config: str, cfg, steps: int, work: Path, smoke: bool) -> dict:
    """`pks train encode` then `pks train` on the latent shards; the trainer's own last metrics."""
    import yaml

    from training.tiny import build_text_encoder, build_wan_vae

    if not (work / "run" / "shards" / "index.parquet").exists():
        pks("synth", work / "footage", "--videos", 2 if smoke else 8, "--seed", 31, "--size", "320x180")
        pks("curate", work / "footage", work / "run", "--captioner", "signals")
    from pks.typedconfig import to_dict

    cfg = to_dict(cfg)  # a plain mapping, changed and written into a config file below
    if cfg["latent"]["kind"] == "wan":
        if not (work / "vae" / "config.json").exists():
            build_wan_vae(work / "vae", z_dim=16)
        cfg["latent"]["path"] = str(work / "vae")
    if not cfg["text_encoder"].get("path"):
        if not (work / "text" / "config.json").exists():
            build_text_encoder(work / "text", d_model=cfg["text_encoder"]["tiny_dim"])
        cfg["text_encoder"]["path"] = str(work / "text")
    cfg["train"].update(steps=steps, log_every=max(1, steps // 4), ckpt_every=steps, compile=not smoke)
    cfg["data"]["schedule"]["steps"] = steps
    path = work / f"{Path(config).stem}-bench.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    pks("train", "encode", work / "run", "--config", path, "--out", work / "latents")
    run = work / f"train-{int(time.time())}"
    pks("train", work / "latents", "--config", path, "--out", run)
    return json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="small")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--frames", default="17,33,49", help="video frame counts for the synthetic step times")
    ap.add_argument("--work", default=None)
    ap.add_argument("--smoke", action="store_true", help="tiny on the CPU, 3 steps: checks the script, not the GPU")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    from training.config import load_train_config

    if args.smoke:
        args.config, args.steps, args.frames = "tiny_pixel", 3, "8,16"
    cfg = load_train_config(args.config, {"train.grad_checkpointing": False})
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    work = Path(args.work or tempfile.mkdtemp(prefix="pks-gpu-bench-"))
    rows = [synthetic(cfg, int(f), args.steps, device, compile_=not args.smoke) for f in args.frames.split(",")]
    real = real_shards(args.config, cfg, args.steps, work, args.smoke)
    fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
    lines = [
        f"{name}; config {args.config} (batch {cfg.data.batch_size}, {list(cfg.data.size)}), bf16 autocast, "
        f"torch.compile {'off (smoke)' if args.smoke else 'on'}, {args.steps} steps",
        "",
        "| input | frames | tokens/sample | step (s) | tokens/s | TFLOP/s | MFU | peak memory (GiB) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| synthetic latents | {r['frames']} | {r['tokens']} | {r['step_s']:.3f} | {r['tokens_per_s']:.0f} | "
            f"{r['tflops']:.1f} | {fmt(r['mfu'], '.1%')} | {fmt(r['peak_memory_gb'], '.1f')} |"
        )
    lines.append(
        f"| real shards (latents, loader included) | {cfg.data.frames} | - | {1 / real['steps_per_s']:.3f} | "
        f"{real['tokens_per_s']:.0f} | {real['tflops']:.1f} | {fmt(real.get('mfu'), '.1%')} | "
        f"{fmt(real.get('peak_memory_gb'), '.1f')} |"
    )
    emit(lines, args.out)


if __name__ == "__main__":
    main()
