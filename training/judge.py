"""The Judge: a reward model that scores a clip in [0, 1], 1 for clean footage (extreme art
included), 0 for failure.

Frames (and their frame-to-frame differences, where boiling and tearing show) go through a
small per-frame CNN, or the frozen image tower of an OpenCLIP model from a local folder
(`JudgeConfig.backbone`); a temporal head reads the features and how they change; PKS's own
signals (deformation, cadence, smear and impact rates, quality statistics) join before the
last layer, so the Judge knows a smear was measured as a smear. Training data comes from
curation runs: `ok` clips of every stage are positives, on purpose including stage 2-3;
failure-flagged clips and failure augmentations of ok clips (`training.failures`) are
negatives, each augmented copy paired with its art clip. Train / validation split by source
video. Everything here runs on a CPU.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
import torch
from torch import nn

from annotators.signals import ClipFrames, analyse, load_clip
from pks.clips import clip_path
from pks.jobconfig import JobConfig
from pks.record import DEFECT_FLAGS
from pks.seeded import unit
from training.failures import FAILURES

log = logging.getLogger(__name__)

MEASURED = (
    "deformation_score",
    "cadence",
    "held_ratio",
    "smear_rate",
    "impact_rate",
    "motion_score",
    "combing",
    "grid_max",
    "dead_spike",
    "lost_band",
)
# Then one 0/1 input per defect flag: the analysis's own, and those only the clip's record knows
# (decode_error: the bitstream). They do not go through the network: the Judge's labels call a
# flagged clip a failure (`add_clip`), so a flag puts a clip below every unflagged one, and the
# network ranks what no flag caught (`Judge.forward`).
SIGNALS = MEASURED + tuple(f"flag:{f}" for f in DEFECT_FLAGS)
FLAGGED = 100.0  # logits taken off a flagged clip: far past where a head's logits lie (a float32
# sigmoid is already 0 or 1 beyond about +-17)


@dataclass
class JudgeConfig:
    # What the Judge sees: 16 frames sampled evenly over the clip, at the analysis width (192) and
    # the clip's 16:9 (issue 24: 8 frames at 64 x 64 spread a damaged stretch of a 60-frame clip
    # over one or two samples, and a third of the analysis width blurred concealment blocks and
    # block grids away). Judges saved before `height` existed saw size x size (see load).
    frames: int = 16
    size: int = 192  # frame width fed to the CNN
    height: int = 0  # frame height; 0: 16:9 of size (even)
    width: int = 24  # CNN channels (first layer)
    val_fraction: float = 0.25  # of source videos
    augment: float = 1.0  # augmented failure copies per ok clip
    seed: int = 0
    epochs: int = 30
    batch: int = 16
    lr: float = 2e-3
    analysis_width: int = 192
    # "cnn" (trained from scratch, runs anywhere) or a local OpenCLIP folder (open_clip_config.json
    # and weights, as on the hub): its image tower, frozen, embeds the frames instead.
    backbone: str = "cnn"


def signal_vector(out: dict, n_frames: int, flags=None) -> list[float]:
    """The PKS signals the Judge reads, from `analyse`'s record fields; the flags are the clip's
    record's where it has one (curation decided them, and the labels follow them), else the
    analysis's (a generated clip, a failure copy)."""
    q = json.loads(out["signals"]).get("quality", {})
    n = max(1, n_frames)
    said = set(out["quality_flags"] if flags is None else flags)
    return [
        out["deformation_score"],
        min(out["cadence"], 4.0),
        out["held_ratio"],
        out["smear_frames"] / n,
        out["impact_frames"] / n,
        100.0 * out["motion_score"],
        100.0 * q.get("combing", 0.0),
        q.get("grid_max", 0.0),
        q.get("dead_spike", 0.0),
        q.get("lost_band", 0.0),
        *(float(f in said) for f in DEFECT_FLAGS),
    ]


def clip_example(
    rgb: np.ndarray, fps: float, cfg: JudgeConfig, acfg: JobConfig, flags=None
) -> tuple[np.ndarray, list[float]]:
    """(frames [T, 6, size, size] float32: RGB and its change since the previous sample, signals)
    for one clip given as analysis-width RGB frames; `flags`: its record's flags (None: no record)."""
    luma = {i: cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for i, f in enumerate(rgb) if i % 2 == 0}
    sig = signal_vector(analyse(ClipFrames(rgb, luma, fps), acfg.analyse, acfg.curriculum), len(rgb), flags)
    idx = np.linspace(0, len(rgb) - 1, cfg.frames).round().astype(int)
    wh = frame_size(cfg)

    def fit(f):  # already at the analysis width: a copy, not a resample, when the sizes agree
        return f if f.shape[1::-1] == wh else cv2.resize(f, wh, interpolation=cv2.INTER_AREA)

    x = np.stack([fit(rgb[i]) for i in idx]).astype(np.float32) / 255.0
    prev = np.stack([fit(rgb[max(0, i - 1)]) for i in idx]).astype(np.float32) / 255.0
    d = x - prev  # what changed since the frame before: boiling, tearing, ghosts
    # float16 halves the memory of a training set at analysis resolution; the model computes in float32.
    return np.concatenate([x, d], axis=-1).transpose(0, 3, 1, 2).astype(np.float16), sig


def frame_size(cfg: JudgeConfig) -> tuple[int, int]:
    """(width, height) of the frames the Judge sees."""
    return cfg.size, cfg.height or max(2, round(cfg.size * 9 / 16 / 2) * 2)


@dataclass
class Examples:
    frames: list = field(default_factory=list)
    signals: list = field(default_factory=list)
    labels: list = field(default_factory=list)  # 1 clean, 0 failure
    kinds: list = field(default_factory=list)  # "ok", "flagged:<flag>" or "aug:<failure>"
    videos: list = field(default_factory=list)  # source video, for the split
    deformation: list = field(default_factory=list)  # measured deformation of the (source) clip
    pair: list = field(default_factory=list)  # index of the art clip an augmented copy was made from
    extra: list = field(default_factory=list)  # collect's `extra(rgb)` per example (a benchmark's baseline)

    def add(self, frames, signals, label, kind, video, deformation, pair=-1, extra=None):
        for f, v in zip(fields(self), (frames, signals, label, kind, video, deformation, pair, extra)):
            getattr(self, f.name).append(v)

    def subset(self, keep) -> Examples:
        out = Examples()
        for i in keep:
            out.add(*(getattr(self, f.name)[i] for f in fields(self)))
        return out


def add_clip(
    ex: Examples, rgb: np.ndarray, fps: float, video: str, flags, cfg: JudgeConfig, acfg: JobConfig, rng, measure=None
) -> None:
    """One clip's examples, given as analysis-width RGB frames: a clip with defect `flags` is a
    failure; an ok clip is clean, followed by `cfg.augment` failure copies of it (drawn with
    `rng`), each paired with it. `measure(rgb)` fills `extra` (a benchmark's baseline)."""
    measure = measure or (lambda _: None)
    kinds = sorted(FAILURES)
    frames, sig = clip_example(rgb, fps, cfg, acfg, flags)
    if flags:
        ex.add(frames, sig, 0, f"flagged:{sorted(flags)[0]}", video, sig[0], extra=measure(rgb))
        return
    art = len(ex.labels)
    ex.add(frames, sig, 1, "ok", video, sig[0], extra=measure(rgb))
    for _ in range(int(cfg.augment) + (rng.random() < cfg.augment % 1)):
        kind = kinds[int(rng.integers(len(kinds)))]
        bad = FAILURES[kind](rgb, rng)
        f2, s2 = clip_example(bad, fps, cfg, acfg)
        ex.add(f2, s2, 0, f"aug:{kind}", video, sig[0], art, measure(bad))


def collect(outs: list[Path], cfg: JudgeConfig, acfg: JobConfig, progress=lambda *_: None, extra=None) -> Examples:
    """Examples from curation runs: ok clips, their failure copies, flagged clips. `extra(rgb)`,
    when given, is computed on every example's analysis-width frames (baseline rewards)."""
    ex = Examples()
    rng = np.random.default_rng(cfg.seed)
    for out in map(Path, outs):
        rows = pq.read_table(
            out / "manifest.parquet", columns=["clip_id", "video_id", "status", "quality_flags", "fps"]
        ).to_pylist()
        for r in rows:
            path = clip_path(out, r["clip_id"])
            flags = set(r["quality_flags"] or []) & set(DEFECT_FLAGS)
            if r["status"] == "error" or not path.exists() or (r["status"] != "ok" and not flags):
                continue
            rgb = load_clip(str(path), width=cfg.analysis_width, luma_every=1 << 30).rgb
            if len(rgb) < 4:
                continue
            # video_id is a content hash: the same video lands on the same side in every run
            add_clip(ex, rgb, r["fps"], r["video_id"], flags, cfg, acfg, rng, extra)
        progress(f"judge: {len(ex.labels)} examples from {out}")
    return ex


def concat(parts) -> Examples:
    """One set of examples from several; `pair` indices shifted so each copy keeps its art clip."""
    out = Examples()
    for part in parts:
        base = len(out.labels)
        for i in range(len(part.labels)):
            row = {f.name: getattr(part, f.name)[i] for f in fields(part)}
            row["pair"] = row["pair"] + base if row["pair"] >= 0 else -1
            out.add(*row.values())
    return out


def leave_one_family_out(by_family: dict[str, Examples]):
    """(held-out family, training examples from every other family, the held-out family's
    examples), one fold per family: a Judge trained on a fold never saw the footage family it
    is scored on."""
    for held in sorted(by_family):
        yield held, concat(by_family[f] for f in sorted(by_family) if f != held), by_family[held]


def split(ex: Examples, cfg: JudgeConfig) -> tuple[Examples, Examples]:
    """By source video: a video's clips (and their copies) are all train or all validation."""
    u = {v: unit(cfg.seed, "judge-split", v) for v in set(ex.videos)}
    held = {v for v, x in u.items() if x < cfg.val_fraction}
    if not held and cfg.val_fraction > 0 and len(u) >= 2:
        held = {min(u, key=u.__getitem__)}  # at least one validation video
    val = [i for i, v in enumerate(ex.videos) if v in held]
    train = sorted(set(range(len(ex.labels))) - set(val))
    return ex.subset(train), ex.subset(val)


class OpenClipFrames(nn.Module):
    """A frozen OpenCLIP image tower from a local folder (`local-dir:` in open_clip's terms; no
    download), projected to the Judge's feature width. It reads the RGB half of the input; its
    weights are not part of a saved Judge (the folder is named in the Judge's config)."""

    mean: torch.Tensor  # buffers (registered in __init__)
    std: torch.Tensor

    def __init__(self, folder: str, width: int):
        super().__init__()
        import open_clip

        if not (Path(folder) / "open_clip_config.json").is_file():
            raise FileNotFoundError(f"{folder} is not an OpenCLIP folder (no open_clip_config.json)")
        model = open_clip.create_model(f"local-dir:{folder}")
        self.tower = model.visual.eval().requires_grad_(False)
        size = self.tower.image_size
        self.size = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
        self.register_buffer("mean", torch.tensor(self.tower.preprocess_cfg["mean"]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(self.tower.preprocess_cfg["std"]).view(1, 3, 1, 1), persistent=False)
        self.proj = nn.Linear(self.tower.output_dim, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rgb = nn.functional.interpolate(x[:, :3], size=self.size, mode="bilinear", align_corners=False)
        with torch.no_grad():
            feats = self.tower((rgb - self.mean) / self.std)
        return self.proj(feats.float())

    def train(self, mode: bool = True):
        super().train(mode)
        self.tower.eval()  # frozen, dropout and norms included
        return self


class Judge(nn.Module):
    sig_mean: torch.Tensor  # buffers (registered in __init__)
    sig_std: torch.Tensor

    def __init__(self, cfg: JudgeConfig, n_signals: int = len(MEASURED)):
        super().__init__()
        w = cfg.width
        self.cfg = cfg

        def block(a, b):
            return nn.Sequential(nn.Conv2d(a, b, 3, stride=2, padding=1), nn.GroupNorm(4, b), nn.GELU())

        if cfg.backbone == "cnn":
            self.frame: nn.Module = nn.Sequential(
                block(6, w),
                block(w, 2 * w),
                block(2 * w, 2 * w),
                block(2 * w, 4 * w),
                nn.AdaptiveAvgPool2d(1),
                nn.Flatten(),
            )
        else:
            self.frame = OpenClipFrames(cfg.backbone, 4 * w)
        self.temporal = nn.Sequential(
            nn.Conv1d(8 * w, 4 * w, 3, padding=1), nn.GELU(), nn.Conv1d(4 * w, 4 * w, 3, padding=1), nn.GELU()
        )
        self.head = nn.Sequential(nn.Linear(8 * w + n_signals, 4 * w), nn.GELU(), nn.Linear(4 * w, 1))
        self.register_buffer("sig_mean", torch.zeros(n_signals))
        self.register_buffer("sig_std", torch.ones(n_signals))

    def forward(self, frames: torch.Tensor, signals: torch.Tensor) -> torch.Tensor:
        """frames [B, T, 6, H, W], signals [B, S] -> logits [B] (sigmoid: the score)."""
        b, t = frames.shape[:2]
        said = signals[:, len(MEASURED) :].amax(1) if signals.shape[1] > len(MEASURED) else 0.0
        signals = signals[:, : len(self.sig_mean)]
        f = self.frame(frames.float().flatten(0, 1)).view(b, t, -1)
        change = f - torch.cat([f[:, :1], f[:, :-1]], 1)  # how the features move between samples
        h = self.temporal(torch.cat([f, change], -1).transpose(1, 2))
        pooled = torch.cat([h.mean(-1), h.amax(-1)], -1)
        logit = self.head(torch.cat([pooled, (signals - self.sig_mean) / self.sig_std], -1)).squeeze(-1)
        return logit - FLAGGED * said


def _tensors(ex: Examples):
    return (
        torch.from_numpy(np.stack(ex.frames)),
        torch.tensor(ex.signals, dtype=torch.float32),
        torch.tensor(ex.labels, dtype=torch.float32),
    )


def auc(labels, scores) -> float:
    """Area under the ROC curve (rank statistic; ties count half)."""
    labels, scores = np.asarray(labels), np.asarray(scores, dtype=float)
    pos, neg = scores[labels == 1], scores[labels == 0]
    if not len(pos) or not len(neg):
        return math.nan
    return float(((pos[:, None] > neg[None]) + 0.5 * (pos[:, None] == neg[None])).mean())


def auc_by_kind(labels, scores, kinds, group=lambda k: k) -> dict[str, float]:
    """AUC of the clean examples against each failure kind alone (kinds grouped by `group`, e.g.
    "aug:boiling" -> "aug"), every clean example in each."""
    labels, scores = np.asarray(labels), np.asarray(scores, dtype=float)
    groups = np.array([group(k) for k in kinds])
    clean = labels == 1
    return {g: auc(labels[clean | (groups == g)], scores[clean | (groups == g)]) for g in sorted(set(groups[~clean]))}


def train(train_ex: Examples, val_ex: Examples | None, cfg: JudgeConfig, progress=None) -> Judge:
    torch.manual_seed(cfg.seed)
    model = Judge(cfg)
    x, s, y = _tensors(train_ex)
    params = [p for p in model.parameters() if p.requires_grad]
    model.sig_mean.copy_(s[:, : len(MEASURED)].mean(0))
    model.sig_std.copy_(s[:, : len(MEASURED)].std(0).clamp_min(1e-3))
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=1e-4)
    # Balanced: each batch weighs clean and failure examples equally.
    w = torch.where(y == 1, 0.5 / y.sum().clamp_min(1), 0.5 / (1 - y).sum().clamp_min(1))
    g = torch.Generator().manual_seed(cfg.seed)
    steps = max(1, len(y) // cfg.batch)
    for epoch in range(cfg.epochs):
        model.train()
        total = 0.0
        for _ in range(steps):
            i = torch.multinomial(w, cfg.batch, replacement=True, generator=g)
            loss = nn.functional.binary_cross_entropy_with_logits(model(x[i], s[i]), y[i])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item()
        msg = f"judge epoch {epoch + 1}/{cfg.epochs}: loss {total / steps:.4f}"
        if val_ex is not None and val_ex.labels and (epoch + 1) % 5 == 0:
            msg += f", validation AUC {auc(val_ex.labels, score(model, val_ex)):.3f}"
        (progress or log.info)(msg)
    return model.eval()


@torch.no_grad()
def score(model: Judge, ex: Examples, batch: int = 64, logits: bool = False) -> list[float]:
    """Scores in [0, 1], or the logits behind them (they still rank where scores saturate)."""
    model.eval()
    x, s, _ = _tensors(ex)
    out = torch.cat([model(x[k : k + batch], s[k : k + batch]) for k in range(0, len(x), batch)])
    return [float(v) for v in (out if logits else torch.sigmoid(out))]


def judge_frames(model: Judge, rgb: np.ndarray, fps: float, acfg: JobConfig, flags=None) -> tuple[float, float, float]:
    """(score, its logit, measured deformation) of one clip given as uint8 [T, H, W, 3] frames
    of any size (a generated clip is resized to the analysis width first, as a curated one is);
    `flags`: its record's flags (None: a generated clip, no record; the analysis's are read)."""
    h, w = rgb.shape[1:3]
    width = model.cfg.analysis_width
    if w != width:
        size = (width, max(2, round(h * width / w / 2) * 2))
        rgb = np.stack(
            [cv2.resize(f, size, interpolation=cv2.INTER_AREA if w > width else cv2.INTER_LINEAR) for f in rgb]
        )
    frames, sig = clip_example(rgb, fps, model.cfg, acfg, flags)
    ex = Examples()
    ex.add(frames, sig, 1, "", "", sig[0])
    logit = score(model, ex, logits=True)[0]
    return float(torch.sigmoid(torch.tensor(logit))), logit, sig[0]


FROZEN = "frame.tower."  # an OpenCLIP backbone's weights: in its own folder, not in the Judge file


def save(model: Judge, path: Path) -> None:
    state = {k: v for k, v in model.state_dict().items() if not k.startswith(FROZEN)}
    torch.save({"config": asdict(model.cfg), "state_dict": state, "signals": SIGNALS}, path)


def load(path: Path) -> Judge:
    blob = torch.load(path, map_location="cpu", weights_only=True)
    # A Judge saved before `height` existed was trained on size x size frames.
    config = {"height": blob["config"].get("size", 0), **blob["config"]}
    model = Judge(JudgeConfig(**config), sum(not str(n).startswith("flag:") for n in blob["signals"]))
    missing, unexpected = model.load_state_dict(blob["state_dict"], strict=False)
    if unexpected or any(not k.startswith(FROZEN) for k in missing):
        raise ValueError(f"{path} does not fit its Judge config: missing {missing[:3]}, unexpected {unexpected[:3]}")
    return model.eval()


def train_judge(outs: list[Path], dest: Path, cfg: JudgeConfig, acfg: JobConfig, progress=None) -> dict:
    """The whole `pks judge train`: examples from the runs, split by source video, trained,
    saved to `dest`. Returns the held-out AUC (None without held-out videos) and its counts."""
    from pks.errors import UserError

    ex = collect(outs, cfg, acfg, progress=progress or log.info)
    if len(set(ex.labels)) < 2:
        raise UserError("the runs hold no usable clips (need ok clips with clip files)")
    tr, va = split(ex, cfg)
    model = train(tr, va if va.labels else None, cfg, progress=progress)
    save(model, dest)
    return {
        "val_auc": auc(va.labels, score(model, va)) if va.labels else None,
        "val_examples": len(va.labels),
        "val_videos": len(set(va.videos)),
    }


def score_run(out: Path, model: Judge, cfg: JobConfig, progress=None) -> dict[str, int]:
    """Write judge_score into every analysed record with a clip file (parts, then manifest),
    part by part and atomically; rerunning rescores the same clips to the same values."""
    import dataclasses

    from pipelines.parts import rewrite_parts

    out = Path(out)
    jc, counts = model.cfg, {"scored": 0, "skipped": 0}

    def scored(records):
        result = []
        for r in records:
            path = clip_path(out, r.clip_id)
            if r.status == "error" or r.deformation_score is None or not path.exists():
                counts["skipped"] += 1
                result.append(r)
                continue
            rgb = load_clip(str(path), width=jc.analysis_width, luma_every=1 << 30).rgb
            if len(rgb) < 2:
                counts["skipped"] += 1
                result.append(r)
                continue
            judged = judge_frames(model, rgb, r.fps, cfg, r.quality_flags or ())
            result.append(dataclasses.replace(r, judge_score=round(judged[0], 4)))
            counts["scored"] += 1
        return result

    for stem, _ in rewrite_parts(out, cfg, scored):
        (progress or log.info)(f"judge: {stem}: {counts['scored']} clips scored so far")
    return counts
