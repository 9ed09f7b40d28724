"""Shard and loader benchmark.

    python benchmarks/loader.py [--videos 6] [--seed 2031] [--steps 40] [--no-memory]

1. Loader throughput: `CurriculumLoader` (train split, batch 4, 16 frames at 8 fps, 128x224)
   against a plain loop that opens the same tars with `tarfile` and decodes the same clips, in
   the same order, with the same `decode_clip`: clips/s, output frames/s and the ratio.
   Loader I/O: bytes read from the shard files per clip the batches hold, with 1, 2 and 4
   DataLoader workers (every `open` of a shard counted, in the workers too), against the bytes
   of those clips' samples in the tars (the ideal: each read once).
2. `pks shard` peak memory (skipped with --no-memory) on a curated run (1x) and on the same run made 10x larger (every
   clip repeated under 10 distinct source videos, clip files hard-linked): peak RSS of the
   `pks shard` process and of its whole process tree (local Ray included), sampled every 20 ms.
"""

from __future__ import annotations

import argparse
import builtins
import contextlib
import hashlib
import multiprocessing
import os
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from pks.record import SCHEMA, ClipRecord, to_table  # noqa: E402
from report import emit  # noqa: E402

PKS = [sys.executable, "-m", "pks.cli"]
FRAMES, FPS, SIZE, BATCH = 16, 8.0, (128, 224), 4


def sh(*args, **kw):
    subprocess.run(
        [*PKS, *map(str, args)], check=True, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw
    )


def loader_rates(run: Path, steps: int, workers: int) -> tuple[float, list[str]]:
    import torch

    from training.data import CurriculumLoader

    ds = CurriculumLoader(run / "shards", frames=FRAMES, fps=FPS, size=SIZE, batch_size=BATCH, steps=steps)
    t0 = time.perf_counter()
    keys = [
        r["clip_id"]
        for b in torch.utils.data.DataLoader(ds, batch_size=None, num_workers=workers)
        for r in b["records"]
    ]
    return time.perf_counter() - t0, keys


@contextlib.contextmanager
def counting_reads(under: Path):
    """builtins.open counting the bytes read from files under `under` into a shared counter
    (forked DataLoader workers inherit both), whichever reader opens them (webdataset, or the
    loader's range reads)."""
    total = multiprocessing.Value("q", 0)
    real = builtins.open

    class Counted:
        def __init__(self, f):
            self._f = f

        def _add(self, n: int) -> None:
            with total.get_lock():
                total.value += n

        def read(self, *a):
            data = self._f.read(*a)
            self._add(len(data))
            return data

        def readinto(self, b):
            n = self._f.readinto(b)
            self._add(n or 0)
            return n

        def __getattr__(self, name):
            return getattr(self._f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self._f.close()

    def counted_open(file, mode="r", *a, **kw):
        f = real(file, mode, *a, **kw)
        return Counted(f) if "r" in mode and str(file).startswith(str(under)) else f

    builtins.open = counted_open
    try:
        yield total
    finally:
        builtins.open = real


def loader_io(run: Path, steps: int, workers: int) -> tuple[float, int, list[str]]:
    """(seconds, bytes read from the shards, clips in the batches) for `steps` batches."""
    with counting_reads(run / "shards") as total:
        seconds, keys = loader_rates(run, steps, workers)
        return seconds, total.value, keys


def sample_sizes(run: Path) -> dict[str, int]:
    """Each sample's bytes in its tar, headers included (from the tar headers)."""
    sizes: dict[str, int] = {}
    for tar in (run / "shards").rglob("*.tar"):
        with tarfile.open(tar) as t:
            for m in t:
                key = m.name.split(".", 1)[0]
                sizes[key] = sizes.get(key, 0) + tarfile.BLOCKSIZE + -(-m.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
    return sizes


def plain_loop(run: Path, keys: list[str]) -> float:
    """The same clips, read from the same tars and decoded the same way, without the loader."""
    import json

    from training.data import decode_clip

    where = {r["clip_id"]: r["shard"] for r in pq.read_table(run / "shards" / "index.parquet").to_pylist()}
    t0 = time.perf_counter()
    tars: dict[str, tarfile.TarFile] = {}
    for k in keys:
        t = tars.setdefault(where[k], tarfile.open(run / "shards" / where[k]))
        record = json.loads(t.extractfile(f"{k}.json").read())
        decode_clip(t.extractfile(f"{k}.mp4").read(), record["fps"], FRAMES, FPS, SIZE)
    for t in tars.values():
        t.close()
    return time.perf_counter() - t0


def tenfold(run: Path, big: Path) -> None:
    """`run` repeated under 10 distinct video ids per source video (clip files hard-linked)."""
    (big / "parts").mkdir(parents=True)
    (big / "clips").mkdir()
    for part in sorted((run / "parts").glob("*.parquet")):
        for c in range(10):
            records = []
            for row in pq.read_table(part, schema=SCHEMA).to_pylist():
                r = ClipRecord.from_row(row)
                old = r.clip_id
                r.video_id = hashlib.blake2b(f"{c}:{r.video_id}".encode(), digest_size=8).hexdigest()
                if (run / "clips" / f"{old}.mp4").exists():
                    os.link(run / "clips" / f"{old}.mp4", big / "clips" / f"{r.clip_id}.mp4")
                records.append(r)
            pq.write_table(to_table(records), big / "parts" / f"{records[0].video_id}.parquet")


def peak_rss(cmd: list[str]) -> tuple[float, float, float]:
    """(seconds, peak RSS of the process, peak RSS of its process tree) in MB."""
    import psutil

    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    p = psutil.Process(proc.pid)
    peak_main = peak_tree = 0.0
    done = threading.Event()

    def sample():
        nonlocal peak_main, peak_tree
        while not done.is_set():
            try:
                main = p.memory_info().rss
                tree = main + sum(c.memory_info().rss for c in p.children(recursive=True))
                peak_main, peak_tree = max(peak_main, main), max(peak_tree, tree)
            except psutil.Error:
                pass
            time.sleep(0.02)

    t0 = time.perf_counter()
    th = threading.Thread(target=sample)
    th.start()
    proc.wait()
    done.set()
    th.join()
    if proc.returncode:
        raise RuntimeError(f"{cmd} failed")
    return time.perf_counter() - t0, peak_main / 2**20, peak_tree / 2**20


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--videos", type=int, default=6)
    ap.add_argument("--seed", type=int, default=2031)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--out", default=None)
    ap.add_argument("--no-memory", action="store_true", help="skip the pks shard memory runs (part 2)")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="pks-loader-"))
    cfg = tmp / "bench.yaml"
    # The 10x run repeats every clip on purpose: only exact repeats are marked duplicates (the
    # config no longer takes -1 for none), and the shards keep them.
    cfg.write_text(
        "analyse: {duplicate_bits: 0}\nshard: {max_samples: 16, reject_flags: [decode_error, interlaced, "
        "block_corruption, decoder_garbage, frozen, too_short, near_black, letterbox, pillarbox, "
        "multi_shot]}\n"
    )
    sh("synth", tmp / "footage", "--videos", a.videos, "--seed", a.seed)
    sh("curate", tmp / "footage", tmp / "run", "--config", cfg, "--no-shard")
    big = tmp / "big"
    mem, samples, runs = {}, {}, [("1x", tmp / "run")]
    if not a.no_memory:
        tenfold(tmp / "run", big)
        from pipelines.parts import build_manifest
        from pks.config import load_config

        build_manifest(big, load_config(cfg))
        runs.append(("10x", big))
    for name, run in runs:
        mem[name] = peak_rss([*PKS, "shard", str(run), "--config", str(cfg), "--num-cpus", "2"])
        samples[name] = len(pq.read_table(run / "shards" / "index.parquet"))

    run = tmp / "run"
    loader_rates(run, 2, 0)  # warm the page cache and imports
    rows = []
    for workers in (0, 2):
        seconds, keys = loader_rates(run, a.steps, workers)
        plain = plain_loop(run, keys)
        n = len(keys)
        rows.append(
            f"| loader, {workers} worker(s) | {n} | {n / seconds:.1f} | {n * FRAMES / seconds:.0f} | "
            f"{n / plain:.1f} | {plain / seconds:.2f} |"
        )
    sizes = sample_sizes(run)
    io_rows = []
    for workers in (1, 2, 4):
        seconds, read, keys = loader_io(run, a.steps, workers)
        n = len(keys)
        io_rows.append(
            f"| {workers} | {n} | {read / 2**20:.1f} | {read / n / 2**10:.0f} | "
            f"{read / sum(sizes[k] for k in keys):.2f} | {n / seconds:.1f} |"
        )
    lines = [
        f"Loader: {a.videos} synthetic videos (seed {a.seed}), batch {BATCH}, {FRAMES} frames at {FPS:g} fps, "
        f"{SIZE[0]}x{SIZE[1]}, {a.steps} steps",
        "",
        "| reader | clips | clips/s | frames/s | plain loop clips/s | ratio (target >= 0.8) |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
        f"Loader I/O: bytes read from the shard files per clip in the batches ({samples['1x']} samples, "
        f"{sum(sizes.values()) / len(sizes) / 2**10:.0f} KiB each in the tars on average)",
        "",
        "| DataLoader workers | clips | MiB read | KiB read per clip | read / those clips' bytes (ideal 1) | clips/s |",
        "|---|---|---|---|---|---|",
        *io_rows,
    ]
    if not a.no_memory:
        lines += [
            "",
            "`pks shard` peak memory (RSS, MB; tree = the process and its children, local Ray included)",
            "",
            "| input | samples | seconds | peak RSS pks shard | peak RSS tree |",
            "|---|---|---|---|---|",
        ]
        for name in ("1x", "10x"):
            s, m, t = mem[name]
            lines.append(f"| {name} | {samples[name]} | {s:.1f} | {m:.0f} | {t:.0f} |")
        lines += [
            "",
            f"10x / 1x peak: pks shard {mem['10x'][1] / mem['1x'][1]:.2f}, "
            f"tree {mem['10x'][2] / mem['1x'][2]:.2f} (target <= 1.5)",
        ]
    emit(lines, a.out)


if __name__ == "__main__":
    main()
