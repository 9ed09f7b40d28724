"""The trainer's data module: curriculum shards -> batches of video tensors, narrative text,
tag ids per axis and clip records. Usable alone:

    loader = CurriculumLoader("OUT/shards", frames=16, fps=8, size=(256, 256), batch_size=8)
    for batch in torch.utils.data.DataLoader(loader, batch_size=None, num_workers=4):
        batch["video"]  # uint8 [B, T, 3, H, W]; batch["text"], batch["tags"], batch["shot"], batch["records"]

Which stage each sample comes from is drawn per sample from the schedule's weights at its
training step (near-physical first, extreme later), with a counter-based hash of (seed,
sample), so the whole stream is a pure function of the seed: `start_step` resumes it exactly,
and any number of DataLoader workers yields the same batches in the same order (worker w
builds batches w, w+W, ...; the DataLoader interleaves them in order). Under
torch.distributed, ranks take disjoint batches of the same stream the same way. Within a stage the
shards are read with webdataset in a seeded order per epoch; a worker skips, without
decoding, the samples that other workers' batches take.
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

import taxonomy
from pks.seeded import unit

N_STAGES = 4


@dataclass
class Schedule:
    """Stage mixing weights per training step: linear from `start` to `end` over `steps`,
    then `end`. Stages without samples get weight 0 (the rest renormalised)."""
    start: tuple[float, ...] = (0.7, 0.2, 0.1, 0.0)
    end: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4)
    steps: int = 10_000

    def weights(self, step: int) -> np.ndarray:
        a = min(max(step / self.steps, 0.0), 1.0) if self.steps else 1.0
        return (1 - a) * np.asarray(self.start, float) + a * np.asarray(self.end, float)


def decode_clip(data: bytes, src_fps: float, frames: int, fps: float, size: tuple[int, int],
                start: int = 0) -> tuple[np.ndarray, int]:
    """mp4 bytes -> uint8 [frames, H, W, 3] sampled at `fps` from frame `start` of the clip, each
    frame scaled to cover `size` (H, W) and centre-cropped. A clip shorter than the span repeats
    its last frame; returns the frames and how many are real."""
    import av
    import cv2

    want = [start + round(j * src_fps / fps) for j in range(frames)]
    h, w = size
    got: dict[int, np.ndarray] = {}
    try:
        with av.open(io.BytesIO(data)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for i, frame in enumerate(container.decode(stream)):
                if i > want[-1]:
                    break
                if i in want:
                    rgb = frame.to_ndarray(format="rgb24")
                    s = max(h / rgb.shape[0], w / rgb.shape[1])
                    rgb = cv2.resize(rgb, (max(w, round(rgb.shape[1] * s)), max(h, round(rgb.shape[0] * s))),
                                     interpolation=cv2.INTER_AREA)
                    y, x = (rgb.shape[0] - h) // 2, (rgb.shape[1] - w) // 2
                    got[i] = rgb[y:y + h, x:x + w]
    except (av.error.FFmpegError, IndexError) as e:  # not a video, or no video stream
        if not got:
            raise ValueError(f"cannot decode the clip: {e}") from None
    if not got:
        raise ValueError("no decodable frames in the clip")
    real = sum(1 for i in want if i in got)
    last = got[max(got)]
    return np.stack([got.get(i, last) for i in want]), real


def tag_targets(caption: dict | None, tax) -> tuple[dict[str, np.ndarray], int]:
    """Multi-hot tag vectors per axis (rows of the generator's per-axis embeddings) and the shot
    size index; an uncaptioned clip has no tags and shot -1."""
    tags = {a: np.zeros(len(tax.axes[a].ids), np.float32) for a in taxonomy.TAG_AXES}
    if not caption:
        return tags, -1
    for a in taxonomy.TAG_AXES:
        for t in caption.get(a) or []:
            tags[a][tax.index(a, t)] = 1.0
    shot = caption.get("shot") or ""
    return tags, tax.index("shot", shot) if shot else -1


class CurriculumLoader(torch.utils.data.IterableDataset):
    """Batches from OUT/shards of one split, stages mixed per the schedule. Infinite; `steps`
    bounds it. Pass to a DataLoader with batch_size=None (the loader batches)."""

    def __init__(self, root: str | Path, split: str = "train", schedule: Schedule | None = None,
                 frames: int = 16, fps: float = 8.0, size: tuple[int, int] = (256, 256), batch_size: int = 8,
                 seed: int = 0, start_step: int = 0, steps: int | None = None,
                 taxonomy_version: int | None = None, rank: int | None = None, world_size: int | None = None,
                 random_window: bool = False, split_batches: bool = False):
        self.root = Path(root)
        index = pq.read_table(self.root / "index.parquet").to_pylist()
        index = [r for r in index if r["split"] == split]
        if not index:
            raise ValueError(f"no {split!r} samples in {self.root / 'index.parquet'}")
        # Per stage: its shards (path, sample count) in index order.
        self.shards: dict[int, list[tuple[str, int]]] = {}
        for r in index:
            lst = self.shards.setdefault(r["stage"], [])
            if not lst or lst[-1][0] != r["shard"]:
                lst.append((r["shard"], 0))
            lst[-1] = (lst[-1][0], lst[-1][1] + 1)
        self.sizes = np.array([sum(n for _, n in self.shards.get(k, [])) for k in range(N_STAGES)])
        self.schedule = schedule or Schedule()
        self.frames, self.fps, self.size, self.batch_size = frames, fps, tuple(size), batch_size
        self.seed, self.start_step, self.steps = seed, start_step, steps
        self.random_window = random_window  # a seeded random window of a longer clip, not its start
        # split_batches: every rank reads each batch and decodes its own slice (batch_size / ranks
        # samples), so a step's global batch is the same on any number of ranks (data parallel
        # training); otherwise ranks take whole, disjoint batches of the stream.
        self.split_batches = split_batches
        self.tax = taxonomy.load(taxonomy_version)
        dist = torch.distributed.is_available() and torch.distributed.is_initialized()
        self.rank = rank if rank is not None else (torch.distributed.get_rank() if dist else 0)
        self.world_size = world_size if world_size is not None else (torch.distributed.get_world_size() if dist else 1)

    # ---- the plan: a pure function of the seed -------------------------------------------
    def stage_of(self, sample: int) -> int:
        """The stage of the sample-th sample of the stream (its step is sample // batch_size)."""
        w = self.schedule.weights(sample // self.batch_size) * (self.sizes > 0)
        if w.sum() <= 0:  # the schedule wants only empty stages: take what exists
            w = (self.sizes > 0).astype(float)
        c = np.cumsum(w / w.sum())
        return int(min(np.searchsorted(c, unit(self.seed, "mix", sample), side="right"), N_STAGES - 1))

    def shard_order(self, stage: int, epoch: int) -> list[tuple[str, int]]:
        shards = self.shards[stage]
        rng = np.random.default_rng(int(unit(self.seed, "epoch", stage, epoch) * 2 ** 63))
        return [shards[i] for i in rng.permutation(len(shards))]

    def _stream(self, stage: int, start: int):
        """Raw samples of one stage from its start-th sample on, epoch after epoch."""
        import webdataset as wds

        epoch, skip = divmod(start, int(self.sizes[stage]))
        while True:
            urls = []
            for path, n in self.shard_order(stage, epoch):
                if skip >= n and not urls:
                    skip -= n
                    continue
                urls.append(str(self.root / path))
            ds = wds.WebDataset(urls, shardshuffle=False, empty_check=False, nodesplitter=None,
                                workersplitter=None)
            for i, sample in enumerate(ds):
                if i >= skip:
                    yield sample
            epoch, skip = epoch + 1, 0

    # ---- iteration -------------------------------------------------------------------------
    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        # Each (rank, worker) builds every n-th batch; ranks see disjoint batches of one stream
        # (or, with split_batches, each rank its slice of every batch).
        me, n = self.rank * workers + worker, self.world_size * workers
        lo, hi = 0, self.batch_size
        if self.split_batches:
            if self.batch_size % self.world_size:
                raise ValueError(f"batch_size {self.batch_size} does not split over {self.world_size} ranks")
            me, n = worker, workers
            per = self.batch_size // self.world_size
            lo, hi = self.rank * per, (self.rank + 1) * per
        first = self.start_step * self.batch_size
        consumed = np.zeros(N_STAGES, int)
        for i in range(first):  # replay the mix to resume: draws only, no data read
            consumed[self.stage_of(i)] += 1
        streams = {k: self._stream(k, int(consumed[k])) for k in range(N_STAGES) if self.sizes[k]}
        step = self.start_step
        while self.steps is None or step < self.start_step + self.steps:
            mine = (step - self.start_step) % n == me
            batch = []
            for i in range(step * self.batch_size, (step + 1) * self.batch_size):
                raw = next(streams[self.stage_of(i)])
                if mine and lo <= i - step * self.batch_size < hi:  # others' samples: read past, not decoded
                    batch.append(self.sample(raw, i))
            if mine:
                yield self.collate(batch, step)
            step += 1

    def sample(self, raw: dict, index: int = 0) -> dict:
        record = json.loads(raw["json"])
        start = 0
        if self.random_window:  # drawn from (seed, sample index): resumes and workers agree
            span = round((self.frames - 1) * record["fps"] / self.fps) + 1
            spare = record["end_frame"] - record["start_frame"] - span
            start = int(unit(self.seed, "window", index) * (spare + 1)) if spare > 0 else 0
        video, real = decode_clip(raw["mp4"], record["fps"], self.frames, self.fps, self.size, start)
        tags, shot = tag_targets(record.get("caption"), self.tax)
        return {"index": index, "video": video, "real_frames": real,
                "text": (record.get("caption") or {}).get("narrative", ""),
                "tags": tags, "shot": shot, "stage": record["curriculum_stage"], "record": record}

    @staticmethod
    def collate(samples: list[dict], step: int) -> dict:
        return {
            **collate_conditions(samples, step),
            "video": torch.from_numpy(np.stack([s["video"] for s in samples])).permute(0, 1, 4, 2, 3).contiguous(),
            "real_frames": torch.tensor([s["real_frames"] for s in samples]),
        }


def collate_conditions(samples: list[dict], step: int) -> dict:
    """What every batch carries besides its pixels or latents."""
    return {
        "step": step,
        "index": torch.tensor([s["index"] for s in samples]),  # place in the stream: seeds per-sample draws
        "text": [s["text"] for s in samples],
        "tags": {a: torch.from_numpy(np.stack([s["tags"][a] for s in samples])) for a in taxonomy.TAG_AXES},
        "shot": torch.tensor([s["shot"] for s in samples]),
        "stage": torch.tensor([s["stage"] for s in samples]),
        "records": [s["record"] for s in samples],
    }
