"""The training configuration (training/configs/*.yaml, a run's RUN/config.yaml) as frozen
dataclasses, one per section, built and checked once by `load_train_config`; every function
below it receives the object or its own section. A run's config.yaml keeps its YAML form
(`to_dict`), so runs written before and after this module load alike."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pks.errors import UserError
from pks.typedconfig import build, need, to_dict, with_overrides

CONFIG_DIR = Path(__file__).parent / "configs"
LABEL = "training config"  # how its messages name it: "unknown training config key latent.stepz ..."
PAIR_MODES = ("offline", "online", "mixed")


def _need(ok: bool, key: str, what: str, value: Any) -> None:
    need(ok, LABEL, key, what, value)


@dataclass(frozen=True, kw_only=True)
class LatentConfig:
    """The latent space the DiT works in (training/vae.py); the learned VAE's fields are read
    only when kind is learned (their defaults are tiny.yaml's, the CPU configuration)."""

    kind: str  # pixel | learned | wan
    path: str | None = None  # learned: an earlier run's vae/ to reuse; wan: the AutoencoderKLWan folder
    channels: int = 8
    width: int = 24
    time_stride: int = 2
    steps: int = 2000
    lr: float = 0.002
    batch_size: int = 8
    kl: float = 0.0001
    motion: float = 2.0
    # The motion term per clip, weighted by the clip's share of the batch's frame-to-frame change
    # (training/clipvae.py vae_loss), so the still clips do not dilute it.
    motion_per_clip: bool = False
    # The share of static clips moved by a camera move in the VAE's own stream (null: the DiT's
    # data.camera_moves.rate); the DiT draws only the motion its VAE keeps.
    camera_moves: float | None = None

    def __post_init__(self):
        _need(self.kind in ("pixel", "learned", "wan"), "latent.kind", "must be pixel, learned or wan", self.kind)
        _need(self.motion >= 0, "latent.motion", "must be >= 0", self.motion)
        _need(
            self.camera_moves is None or 0 <= self.camera_moves <= 1,
            "latent.camera_moves",
            "must be null or within 0..1",
            self.camera_moves,
        )

    def to_dict(self) -> dict:
        """kind and path, and the VAE's fields for a learned space only: the form the configs
        write, which latent shards fingerprint (training/encode.py)."""
        out = dataclasses.asdict(self)
        if self.kind != "learned":
            out = {"kind": self.kind, "path": self.path}
        return out


@dataclass(frozen=True, kw_only=True)
class TextEncoderConfig:
    path: str | None = None  # a local T5-family folder; null: a tiny random UMT5 built into RUN/
    tiny_dim: int  # the tiny encoder's width (the model's text_dim)
    max_length: int


@dataclass(frozen=True, kw_only=True)
class ScheduleConfig:
    """Stage weights from `start` to `end` over `steps` (training/data.py Schedule)."""

    start: list[float]
    end: list[float]
    steps: int


@dataclass(frozen=True, kw_only=True)
class CameraMovesConfig:
    """Static clips seen through a travelling window as pans and tilts (training/augment.py):
    the share of static clips so moved, and the travel's range as a share of the frame."""

    rate: float = 0.0  # off unless a config asks (runs written before it load as off)
    travel: tuple[float, float] = (0.1, 0.25)

    def __post_init__(self):
        from training.augment import ZOOM

        _need(0 <= self.rate <= 1, "data.camera_moves.rate", "must be within 0..1", self.rate)
        lo, hi = self.travel
        _need(
            0 <= lo <= hi <= 1 - ZOOM, "data.camera_moves.travel", f"must be [lo, hi] within 0..{1 - ZOOM}", self.travel
        )


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    frames: int
    fps: float
    size: tuple[int, int]  # H, W
    batch_size: int  # global: split across ranks
    workers: int
    random_window: bool
    cache_mb: int = 0
    camera_moves: CameraMovesConfig
    # The share of clips seen flipped left to right, pans swapped (training/augment.py mirror);
    # off unless a config asks (runs written before it load as off).
    mirror: float = 0.0
    schedule: ScheduleConfig

    def __post_init__(self):
        if self.batch_size < 1:  # the message it always had
            raise UserError("training config needs data.batch_size >= 1 and train.steps >= 1")
        _need(0 <= self.mirror <= 1, "data.mirror", "must be within 0..1", self.mirror)


@dataclass(frozen=True, kw_only=True)
class LoopConfig:
    """The `train` section: optimiser, timesteps, guidance dropout, checkpoints."""

    steps: int
    lr: float
    min_lr: float
    warmup: int
    weight_decay: float
    betas: tuple[float, float]
    grad_clip: float
    ema_decay: float
    seed: int
    logit_mean: float
    logit_std: float
    shift: float
    loss_weight: str = "velocity"
    drop_tags: float
    drop_text: float
    # Share of samples with every condition dropped at once (tags, shot, stage, text): the
    # unconditional branch classifier-free guidance subtracts. Dropped only axis by axis, a
    # clip whose caption knows camera, vfx and stage is seen with all of them dropped at
    # drop_tags^3 (0.001): guidance would extrapolate from a branch never trained.
    drop_all: float = 0.0
    bf16: bool
    grad_checkpointing: bool
    compile: bool
    parallel: str  # ddp | fsdp
    log_every: int
    ckpt_every: int
    keep_ckpts: int

    def __post_init__(self):
        if self.steps < 1:
            raise UserError("training config needs data.batch_size >= 1 and train.steps >= 1")
        if self.loss_weight not in ("velocity", "x0"):  # the message it always had
            raise UserError(f"train.loss_weight must be velocity or x0, got {self.loss_weight!r}")


@dataclass(frozen=True, kw_only=True)
class SampleConfig:
    steps: int
    guidance_tags: float
    guidance_text: float
    # Noise levels t (1 = pure noise) where the two guidance terms apply; outside it the
    # sampler follows the conditional velocity alone (Kynkaanniemi et al. 2024, "Applying
    # guidance in a limited interval"): guidance near t = 0 only sharpens per-frame detail.
    guidance_interval: tuple[float, float] = (0.0, 1.0)

    def __post_init__(self):
        lo, hi = self.guidance_interval
        if not 0 <= lo <= hi <= 1:
            raise UserError(f"sample.guidance_interval must be [lo, hi] with 0 <= lo <= hi <= 1, got {[lo, hi]}")


@dataclass(frozen=True, kw_only=True)
class DpoConfig:
    """The preference stage (training/dpo.py)."""

    steps: int
    beta: float
    lr: float
    sft_weight: float = 0.0
    batch: int
    pairs: str  # offline | online | mixed
    k: int
    margin: float
    prompts: int
    refresh: int
    sample_steps: int
    ema_decay: float
    init: str | None = None  # the run it started from (written into RUN_DPO/config.yaml)

    def __post_init__(self):
        if self.pairs not in PAIR_MODES:
            raise UserError(f"dpo.pairs must be one of {', '.join(PAIR_MODES)}, got {self.pairs!r}")
        if self.beta <= 0 or self.batch < 1 or self.steps < 1 or self.k < 2 or self.sft_weight < 0:
            raise UserError("dpo needs beta > 0, batch >= 1, steps >= 1, k >= 2 and sft_weight >= 0")


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    model: str  # training/model.py MODELS
    arch: dict[str, Any] | None = None  # DiTConfig overrides (checked by model_config)
    tag_channel: bool = True  # false: the text-only ablation
    latent: LatentConfig
    text_encoder: TextEncoderConfig
    data: DataConfig
    train: LoopConfig
    sample: SampleConfig
    dpo: DpoConfig | None = None
    taxonomy_version: int | None = None  # pinned when a run starts; a run without one used v1

    def __post_init__(self):
        from training.model import model_config

        try:
            model_config(self.model, self.arch)
        except ValueError as e:
            raise UserError(f"training config: {e}") from None

    def replace(self, overrides: dict[str, Any]) -> TrainConfig:
        """This config with dotted overrides (`{"data.frames": 8}`), checked like a file's."""
        return from_dict(with_overrides(to_dict(self), overrides, TrainConfig, LABEL))


def from_dict(data: dict) -> TrainConfig:
    """A config from its YAML mapping (a config file's, or a run's config.yaml)."""
    if not isinstance(data, dict):
        raise UserError(f"a training config must be a YAML mapping, got {data!r}")
    return build(TrainConfig, data, LABEL)


def load_train_config(name: str | Path, overrides: dict | None = None) -> TrainConfig:
    """A config from training/configs/{name}.yaml or a YAML file, with dotted overrides."""
    path = CONFIG_DIR / f"{name}.yaml"
    if not path.is_file():
        path = Path(name)
    if not path.is_file():
        names = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
        raise UserError(f"no training config {str(name)!r}: name one of {names}, or a YAML file")
    return from_dict(with_overrides(yaml.safe_load(path.read_text()), overrides, TrainConfig, LABEL))


def load_run_config(run: Path) -> TrainConfig:
    """The config a run was trained with (RUN/config.yaml)."""
    return from_dict(yaml.safe_load((Path(run) / "config.yaml").read_text()))


def write_run_config(cfg: TrainConfig, run: Path) -> None:
    (Path(run) / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
