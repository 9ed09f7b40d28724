"""The trainer's data module: curriculum shards -> batches of video tensors, narrative text,
tag ids per axis and clip records. Usable alone:

    loader = CurriculumLoader("OUT/shards", frames=16, fps=8, size=(256, 256), batch_size=8)
    for batch in torch.utils.data.DataLoader(loader, batch_size=None, num_workers=4):
        batch["video"]  # uint8 [B, T, 3, H, W]; batch["text"], batch["tags"], batch["shot"], batch["records"]

The stream is a pure function of the seed, and where its i-th sample comes from is computed
in O(1) from (seed, i), never by replaying the stream (`place`):
- the stage: stream positions come in chunks of PLAN_CHUNK; each stage's draws before a chunk
  are its expected count under the schedule (near-physical first, extreme later), summed in
  closed form and rounded with a seeded phase, so every chunk holds each stage's share to
  within one sample, in a seeded order. A stage's k-th draw is thus known without counting.
- the sample: draw k of a stage is sample k mod n of its epoch k // n, the stage's shards in a
  seeded order per epoch, each shard's samples in tar order.
So `start_step` resumes at once, and each (rank, DataLoader worker) builds only its own
batches (worker w of W: batches w, w+W, ...; the DataLoader interleaves them in order; ranks
take disjoint batches, or with split_batches each its slice of every batch), reading only
those samples: one byte-range read per sample, at the offset that index.parquet records (a
range read works the same on object storage). Bytes read do not grow with workers x ranks.
"""

from __future__ import annotations

import io
import itertools
import json
import math
import tarfile
from bisect import bisect_right
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, cast

import numpy as np
import pyarrow.parquet as pq
import torch

import taxonomy
from pks.errors import UserError
from pks.seeded import unit
from pks.shardfile import member_end, sample_ranges, stale_samples
from training.augment import MIRRORED_TAGS, camera_move, mirror

N_STAGES = 4
PLAN_CHUNK = 256  # stream positions per chunk of the stage plan: a chunk holds each stage's share +-1


@dataclass
class Schedule:
    """Stage mixing weights per training step: linear from `start` to `end` over `steps`,
    then `end`. The loader gives stages without samples weight 0 (`start` and `end` each
    renormalised over the rest)."""

    start: tuple[float, ...] = (0.7, 0.2, 0.1, 0.0)
    end: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4)
    steps: int = 10_000

    def weights(self, step: int) -> np.ndarray:
        a = min(max(step / self.steps, 0.0), 1.0) if self.steps else 1.0
        return (1 - a) * np.asarray(self.start, float) + a * np.asarray(self.end, float)


def read_range(path: Path, offset: int, length: int) -> bytes:
    """Bytes [offset, offset + length) of a shard: the loader reads shards only through here,
    one range per sample (an object store serves byte ranges the same way, e.g. via fsspec)."""
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(length)


def tar_sample(data: bytes, key: str) -> dict:
    """One sample's members ({ext: bytes, "__key__": key}) from its byte range of a tar.
    ValueError unless the range holds exactly that sample's members, so a stale index (or one
    copied from other tars) is caught, not read as garbage."""
    raw: dict[str, Any] = {"__key__": key}
    end = 0
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as t:
            for m in t:
                name, _, ext = m.name.partition(".")
                if name != key or not m.isfile():
                    raise ValueError(f"{m.name} is not a member of sample {key}")
                member = t.extractfile(m)
                assert member is not None  # a regular file (checked above)
                raw[ext] = member.read()
                end = member_end(m)
    except tarfile.TarError as e:
        raise ValueError(f"not sample {key}: {e}") from None
    if len(raw) == 1 or end != len(data):
        raise ValueError(f"the range of sample {key} holds {len(data)} bytes, its members {end}")
    return raw


def span(frames: int, fps: float, src_fps: float) -> int:
    """Source frames a window of `frames` frames at `fps` covers in a clip shot at `src_fps`."""
    return round((frames - 1) * src_fps / fps) + 1


def window(start: int, frames: int, fps: float, src_fps: float) -> list[int]:
    """The clip's frame numbers of a window of `frames` frames at `fps` from frame `start`."""
    return [start + round(j * src_fps / fps) for j in range(frames)]


def pick(got: dict[int, np.ndarray], want: list[int]) -> np.ndarray:
    """The wanted frames that exist, in order (never padded)."""
    return np.stack([got[i] for i in want if i in got])


def decode_clip(
    data: bytes, src_fps: float, frames: int, fps: float, size: tuple[int, int], start: int = 0
) -> np.ndarray:
    """mp4 bytes -> uint8 [n, H, W, 3] sampled at `fps` from frame `start` of the clip, each
    frame scaled to cover `size` (H, W) and centre-cropped: n = `frames` when the clip holds the
    whole window, fewer when it ends early (never padded: a repeated frame would teach the model
    a freeze that the footage does not have)."""
    want = window(start, frames, fps, src_fps)
    return pick(decode_frames(data, size, set(want)), want)


def decode_frames(data: bytes, size: tuple[int, int], wanted: set[int] | None = None) -> dict[int, np.ndarray]:
    """mp4 bytes -> {frame number: uint8 [H, W, 3]} for the wanted frames (all when None), each
    scaled to cover `size` (H, W) and centre-cropped."""
    import av
    import cv2

    h, w = size
    last = max(wanted) if wanted else None
    got: dict[int, np.ndarray] = {}
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for i, frame in enumerate(container.decode(stream)):
                if last is not None and i > last:
                    break
                if wanted is None or i in wanted:
                    rgb: np.ndarray = frame.to_ndarray(format="rgb24")
                    s = max(h / rgb.shape[0], w / rgb.shape[1])
                    rgb = cv2.resize(
                        rgb,
                        (max(w, round(rgb.shape[1] * s)), max(h, round(rgb.shape[0] * s))),
                        interpolation=cv2.INTER_AREA,
                    )
                    y, x = (rgb.shape[0] - h) // 2, (rgb.shape[1] - w) // 2
                    got[i] = rgb[y : y + h, x : x + w]
    except (av.error.FFmpegError, IndexError) as e:  # not a video, or no video stream
        if not got:
            raise ValueError(f"cannot decode the clip: {e}") from None
    if not got:
        raise ValueError("no decodable frames in the clip")
    return got


class StaleShards(UserError, ValueError):
    """Shards whose records no longer match the manifest: a user's next step (one line, exit 2)."""


def refuse_stale(root: Path) -> None:
    """StaleShards when shards at OUT/shards hold records that changed in OUT/manifest.parquet
    after `pks shard` wrote them (a caption, an audit, a Judge score): train on what the manifest
    says. Every trainer that streams raw shards (sft, dpo) meets it through the loader."""
    out = Path(root).parent
    if Path(root).name == "shards" and (out / "manifest.parquet").is_file():
        stale, held = stale_samples(out)
        if stale:
            raise StaleShards(
                f"{stale} sample(s) of {root} no longer match {out / 'manifest.parquet'} "
                f"({held} sharded): run pks shard {out} (or pass --allow-stale)"
            )


def shards_root(source: str | Path) -> Path:
    """OUT/shards of a curate run, or a shards folder (raw or latent) itself."""
    source = Path(source)
    for root in (source / "shards", source):
        if (root / "index.parquet").is_file():
            return root
    raise UserError(f"no shards in {source} (give a curate OUT folder or its shards/ folder; run pks shard first)")


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

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        schedule: Schedule | None = None,
        frames: int = 16,
        fps: float = 8.0,
        size: tuple[int, int] = (256, 256),
        batch_size: int = 8,
        seed: int = 0,
        start_step: int = 0,
        steps: int | None = None,
        taxonomy_version: int | None = None,
        rank: int | None = None,
        world_size: int | None = None,
        random_window: bool = False,
        split_batches: bool = False,
        cache_mb: float = 0,
        allow_stale: bool = False,
        camera_moves: float = 0.0,
        move_travel: tuple[float, float] = (0.1, 0.25),
        mirror: float = 0.0,
    ):
        self.root = Path(root)
        index = pq.read_table(self.root / "index.parquet").to_pylist()
        index = sorted((r for r in index if r["split"] == split), key=lambda r: (r["shard"], r["position"]))
        if not index:
            raise ValueError(f"no {split!r} samples in {self.root / 'index.parquet'}")
        if not allow_stale:
            refuse_stale(self.root)
        if "fps" not in index[0]:
            raise ValueError(f"{self.root / 'index.parquet'} predates clip lengths in the index: run pks shard again")
        # Only clips that hold the whole window enter the stream (every window lies inside real
        # frames); how many were left out is `left_out`.
        fits = [r["frames"] >= span(frames, fps, r["fps"]) for r in index]
        self.left_out = fits.count(False)
        index = [r for r, ok in zip(index, fits) if ok]
        if not index:
            raise ValueError(f"no {split!r} clip in {self.root} holds {frames} frames at {fps} fps")
        # Per stage its shards; per shard its samples in tar order: (key, byte offset, length),
        # the range None where the index predates recorded offsets (found from the tar headers).
        self.shards: dict[int, list[str]] = {}
        self.members: dict[str, list[tuple[str, int | None, int | None]]] = {}
        for r in index:
            if r["shard"] not in self.members:
                self.shards.setdefault(r["stage"], []).append(r["shard"])
            self.members.setdefault(r["shard"], []).append((r["clip_id"], r.get("offset"), r.get("length")))
        self.sizes = np.array([sum(len(self.members[s]) for s in self.shards.get(k, [])) for k in range(N_STAGES)])
        self.schedule = schedule or Schedule()
        self.frames, self.fps, self.batch_size = frames, fps, batch_size
        self.size = cast("tuple[int, int]", tuple(size))  # (H, W), given as a list by a YAML config
        self.seed, self.start_step, self.steps = seed, start_step, steps
        self.random_window = random_window  # a seeded random window of a longer clip, not its start
        # The share of static clips seen through a travelling window as a pan or tilt
        # (training/augment.py), and the travel's range as a share of the frame.
        self.camera_moves, self.move_travel = camera_moves, cast("tuple[float, float]", tuple(move_travel))
        self.mirror = mirror  # the share of clips seen flipped left to right (training/augment.py)
        # Clips decoded once at the target size and kept (per process, up to cache_mb): a small
        # run draws each clip many times, and decoding from frame 0 to a random window costs
        # more than a tiny model's step. Batches are the same with and without the cache.
        self.cache_bytes, self._cached = cache_mb * 2**20, 0
        self._decoded: dict[str, np.ndarray] = {}
        # split_batches: every rank reads each batch and decodes its own slice (batch_size / ranks
        # samples), so a step's global batch is the same on any number of ranks (data parallel
        # training); otherwise ranks take whole, disjoint batches of the stream.
        self.split_batches = split_batches
        self.tax = taxonomy.load(taxonomy_version)
        dist = torch.distributed.is_available() and torch.distributed.is_initialized()
        self.rank = rank if rank is not None else (torch.distributed.get_rank() if dist else 0)
        self.world_size = world_size if world_size is not None else (torch.distributed.get_world_size() if dist else 1)
        # Exact rational weights, so the plan is the same on every machine and never rounds
        # a stage's cumulative count backwards.
        self.mix = [self._normalised(w) for w in (self.schedule.start, self.schedule.end)]
        self.phase = [Fraction(unit(self.seed, "phase", k)) for k in range(N_STAGES)]
        self._chunks: dict[int, tuple] = {}  # small caches of the plan (per process)
        self._epochs: dict[tuple[int, int], tuple] = {}
        self._scanned: dict[str, dict[str, tuple[int, int]]] = {}  # ranges from tar headers, where the index has none

    # ---- the plan: a pure function of (seed, position), O(1) per position -------------------
    def _normalised(self, weights) -> list[Fraction]:
        w = [Fraction(str(float(x))) if self.sizes[k] else Fraction(0) for k, x in enumerate(weights)]
        if sum(w) <= 0:  # the schedule wants only empty stages: take what exists
            w = [Fraction(int(n > 0)) for n in self.sizes]
        return [x / sum(w) for x in w]

    def expected(self, x: int) -> list[Fraction]:
        """Expected draws of each stage among the first x stream positions: the weights of
        each position's step (linear from start to end over schedule.steps), summed in closed
        form."""
        (steps, (start, end)), (t, r) = (self.schedule.steps, self.mix), divmod(x, self.batch_size)
        if steps <= 0:
            ramp, a = Fraction(t), Fraction(1)  # ramp: sum of a(step) over the steps before t
        elif t <= steps + 1:
            ramp, a = Fraction(t * (t - 1), 2 * steps), min(Fraction(t, steps), Fraction(1))
        else:
            ramp, a = Fraction(steps + 1, 2) + t - steps - 1, Fraction(1)
        return [self.batch_size * (t * s + (e - s) * ramp) + r * (s + (e - s) * a) for s, e in zip(start, end)]

    def _drawn(self, x: int) -> list[int]:
        """Draws of each stage before mass point x (the seeded phase rounds the expectation)."""
        return [math.floor(c + u) for c, u in zip(self.expected(x), self.phase)]

    def _chunk(self, c: int) -> tuple[int, np.ndarray, np.ndarray]:
        """Chunk c of the stream: its first position, the stage of each of its positions and
        which draw of that stage each is."""
        if c not in self._chunks:
            lo, hi = self._drawn(c * PLAN_CHUNK), self._drawn((c + 1) * PLAN_CHUNK)
            stages = np.repeat(np.arange(N_STAGES), np.subtract(hi, lo))
            stages = stages[np.random.default_rng(int(unit(self.seed, "chunk", c) * 2**63)).permutation(len(stages))]
            nth, seen = np.empty(len(stages), np.int64), list(lo)
            for o, k in enumerate(stages):
                nth[o], seen[k] = seen[k], seen[k] + 1
            if len(self._chunks) > 16:
                self._chunks.clear()
            self._chunks[c] = (sum(lo), stages, nth)
        return self._chunks[c]

    def draw(self, i: int) -> tuple[int, int]:
        """(stage, k): the i-th sample of the stream is the stage's k-th draw."""
        c = i // PLAN_CHUNK  # a chunk starts within N_STAGES positions of c * PLAN_CHUNK
        while True:
            first, stages, nth = self._chunk(c)
            if i < first:
                c -= 1
            elif i >= first + len(stages):
                c += 1
            else:
                return int(stages[i - first]), int(nth[i - first])

    def stage_of(self, i: int) -> int:
        """The stage of the i-th sample of the stream (its step is i // batch_size)."""
        return self.draw(i)[0]

    def shard_order(self, stage: int, epoch: int) -> list[str]:
        shards = self.shards[stage]
        rng = np.random.default_rng(int(unit(self.seed, "epoch", stage, epoch) * 2**63))
        return [shards[i] for i in rng.permutation(len(shards))]

    def place(self, i: int) -> tuple[int, str, int]:
        """Where the i-th sample of the stream comes from: (stage, shard, position in the shard)."""
        stage, k = self.draw(i)
        epoch, j = divmod(k, int(self.sizes[stage]))
        if (stage, epoch) not in self._epochs:
            if len(self._epochs) > 16:
                self._epochs.clear()
            order = self.shard_order(stage, epoch)
            self._epochs[stage, epoch] = order, np.cumsum([len(self.members[s]) for s in order]).tolist()
        order, ends = self._epochs[stage, epoch]
        n = bisect_right(ends, j)
        return stage, order[n], j - (ends[n - 1] if n else 0)

    def key_of(self, i: int) -> str:
        """The key (clip_id) of the i-th sample of the stream."""
        _, shard, pos = self.place(i)
        return self.members[shard][pos][0]

    def read(self, shard: str, pos: int) -> dict:
        """The raw members of a shard's pos-th sample: one range read at the index's offset.
        Where the index has none, or a wrong one (latent shards copy their source's index), the
        shard's tar headers are read once per process and give the ranges."""
        key, offset, length = self.members[shard][pos]
        path = self.root / shard
        ranges = self._scanned.get(shard)
        if ranges is None and offset is not None and length is not None:
            try:
                return tar_sample(read_range(path, offset, length), key)
            except ValueError:
                pass
        if ranges is None:
            ranges = self._scanned[shard] = sample_ranges(path)
        return tar_sample(read_range(path, *ranges[key]), key)

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
        for step in itertools.count(self.start_step + me, n):
            if self.steps is not None and step >= self.start_step + self.steps:
                return
            first = step * self.batch_size
            yield self.collate(
                [self.sample(self.read(*self.place(i)[1:]), i) for i in range(first + lo, first + hi)], step
            )

    def sample(self, raw: dict, index: int = 0) -> dict:
        record = json.loads(raw["json"])
        start = 0
        if self.random_window:  # drawn from (seed, sample index): resumes and workers agree
            spare = record["end_frame"] - record["start_frame"] - span(self.frames, self.fps, record["fps"])
            start = int(unit(self.seed, "window", index) * (spare + 1)) if spare > 0 else 0
        video = self._window(raw, record["fps"], start)
        if len(video) < self.frames:  # the record promised the frames; the clip file lacks them
            raise ValueError(
                f"clip {raw['__key__']} decodes {len(video)} of the {self.frames} frames its record promises"
            )
        video, caption, move = camera_move(
            video, record.get("caption"), self.camera_moves, self.move_travel, self.seed, index
        )
        if move:  # the record as the sample now is: its camera tag is the move
            record = {**record, "caption": caption, "camera_move": move}
        video, caption, flipped = mirror(video, record.get("caption"), self.mirror, self.seed, index)
        if flipped:  # a move drawn above is mirrored too
            record = {**record, "caption": caption, "mirrored": True}
            if move:
                record["camera_move"] = MIRRORED_TAGS.get(move, move)
        tags, shot = tag_targets(record.get("caption"), self.tax)
        return {
            "index": index,
            "video": video,
            "text": (record.get("caption") or {}).get("narrative", ""),
            "tags": tags,
            "shot": shot,
            "stage": record["curriculum_stage"],
            "record": record,
        }

    def _window(self, raw: dict, src_fps: float, start: int) -> np.ndarray:
        key, want = raw["__key__"], window(start, self.frames, self.fps, src_fps)
        if key not in self._decoded:
            if self._cached >= self.cache_bytes:  # no cache, or a full one: decode only up to the window
                return decode_clip(raw["mp4"], src_fps, self.frames, self.fps, self.size, start)
            got = decode_frames(raw["mp4"], self.size)
            size = len(got) * self.size[0] * self.size[1] * 3
            # A hole (a frame that did not decode) would shift positions against frame numbers.
            if list(got) != list(range(len(got))) or self._cached + size > self.cache_bytes:
                return pick(got, want)
            self._decoded[key] = np.stack(list(got.values()))
            self._cached += size
        frames = self._decoded[key]
        return frames[[i for i in want if i < len(frames)]]

    @staticmethod
    def collate(samples: list[dict], step: int) -> dict:
        return {
            **collate_conditions(samples, step),
            "video": torch.from_numpy(np.stack([s["video"] for s in samples])).permute(0, 1, 4, 2, 3).contiguous(),
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
