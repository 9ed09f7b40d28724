"""Job configuration: a YAML file of parameters, with CLI flags layered on top, checked as a
whole before any work starts (a typo found after an hour of decoding costs the hour)."""

from __future__ import annotations

import copy
import dataclasses
import os
import shutil
from pathlib import Path
from typing import Any

import yaml

from pks.errors import ConfigError
from pks.jobconfig import JobConfig
from pks.typedconfig import build, to_dict, with_overrides

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "pipelines" / "configs" / "curate.yaml"

LABEL = "config"  # how its messages name it: "unknown config key shard.max_samplez ..."


X264_PRESETS = (
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
    "placebo",
)


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        elif v is not None:
            out[k] = v
    return out


def defaults() -> dict:
    with open(DEFAULT_CONFIG) as f:
        return yaml.safe_load(f)


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> JobConfig:
    """The default job config, updated by `path` (a YAML file) and then by `overrides`, built
    into its sections and validated once (ConfigError, one line, on the first value that cannot
    work).

    Overrides use dotted keys for nested values ({"split.detector": "anime"}); None values
    mean "not given" and leave the config alone.
    """
    data = defaults()
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            user = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"config {p} is not valid YAML: {str(e).splitlines()[0]}") from None
        if not isinstance(user, dict):
            raise ConfigError(f"config {p} must be a YAML mapping")
        data = _merge(data, user)
    # every key known, every value of its field's type
    cfg = build(JobConfig, with_overrides(data, overrides, JobConfig, LABEL), LABEL)
    validate(cfg)
    return cfg


def replace_config(cfg: JobConfig, overrides: dict[str, Any]) -> JobConfig:
    """`cfg` with dotted overrides (`{"shard.enabled": False}`), checked again."""
    new = build(JobConfig, with_overrides(to_dict(cfg), overrides, JobConfig, LABEL), LABEL)
    validate(new)
    return new


def validate(cfg: JobConfig) -> None:
    """Raise ConfigError for the first value that cannot work: out-of-range thresholds, missing
    model files, unknown detectors or captioners (unknown keys and wrong types are found by
    `build`)."""

    def need(ok: bool, key: str, what: str) -> None:
        if not ok:
            node: Any = cfg
            for k in key.split("."):
                node = getattr(node, k)
            raise ConfigError(f"config {key} {what}, got {node!r}")

    need(cfg.ray.num_cpus is None or cfg.ray.num_cpus >= 1, "ray.num_cpus", "must be at least 1")
    sp = cfg.split
    need(sp.min_shot_s >= 0, "split.min_shot_s", "must be >= 0")
    need(sp.max_shot_s > sp.min_shot_s, "split.max_shot_s", "must exceed split.min_shot_s")
    need(sp.trim_frames >= 0, "split.trim_frames", "must be >= 0")
    from annotators.shots import get_detector

    try:
        get_detector(sp.detector, **sp.params)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"config split: {e}") from None
    need(0 <= cfg.clips.crf <= 51, "clips.crf", "must be 0..51")
    need(sp.segment_s > 0, "split.segment_s", "must be > 0")
    need(sp.overlap_s >= 0, "split.overlap_s", "must be >= 0")
    need(
        cfg.clips.max_height == 0 or cfg.clips.max_height >= 16,
        "clips.max_height",
        "must be 0 (source size) or at least 16",
    )
    from pks.videoio import ENCODERS

    need(cfg.clips.encoder in ENCODERS, "clips.encoder", f"must be one of {', '.join(ENCODERS)}")
    need(cfg.clips.threads >= 0, "clips.threads", "must be >= 0")
    need(cfg.clips.preset in X264_PRESETS, "clips.preset", f"must be one of {', '.join(X264_PRESETS)}")
    a = cfg.analyse
    need(a.width >= 32 and a.width % 2 == 0, "analyse.width", "must be an even number >= 32")
    need(a.min_frames >= 0, "analyse.min_frames", "must be >= 0")
    for f in dataclasses.fields(a.camera):
        need(getattr(a.camera, f.name) > 0, f"analyse.camera.{f.name}", "must be > 0")
    need(0 <= a.duplicate_bits <= 64, "analyse.duplicate_bits", "must be 0..64")
    from annotators.signals import MotionParams, QualityParams, params

    for key, cls in (("motion", MotionParams), ("quality", QualityParams)):
        try:
            params(cls, getattr(a, key))
        except (ValueError, TypeError) as e:
            raise ConfigError(f"config analyse.{key}: {e}") from None
    ce = a.clip_embeddings
    need(0 < ce.similarity <= 1, "analyse.clip_embeddings.similarity", "must be in (0, 1]")
    if ce.checkpoint:
        need(
            Path(ce.checkpoint).is_file(),
            "analyse.clip_embeddings.checkpoint",
            "must be an existing local checkpoint file (PKS never downloads weights)",
        )
        try:
            import open_clip
        except ImportError:
            raise ConfigError("config analyse.clip_embeddings needs open_clip (pip install 'pks[clip]')") from None
        need(ce.arch in open_clip.list_models(), "analyse.clip_embeddings.arch", "is not an OpenCLIP model")
    cu = cfg.curriculum.deformation
    need(
        len(cu) == 3 and all(isinstance(t, (int, float)) and 0 <= t <= 1 for t in cu) and cu == sorted(cu),
        "curriculum.deformation",
        "must be 3 ascending thresholds in [0, 1]",
    )
    mb = cfg.curriculum.motion_boost
    need(mb is None or mb >= 0, "curriculum.motion_boost", "must be >= 0 or null")
    sh = cfg.shard
    from pks.record import QUALITY_FLAGS

    need(
        set(sh.reject_flags) <= set(QUALITY_FLAGS),
        "shard.reject_flags",
        f"must be quality flags ({', '.join(QUALITY_FLAGS)})",
    )
    need(sh.max_samples >= 1, "shard.max_samples", "must be at least 1")
    need(sh.max_bytes >= 1, "shard.max_bytes", "must be at least 1")
    need(0 <= sh.val_fraction < 1, "shard.val_fraction", "must be in [0, 1)")
    need(sh.thumb_width >= 16, "shard.thumb_width", "must be at least 16")
    c = cfg.caption
    for key, low in (
        ("frames", 1),
        ("token_budget", 1),
        ("concurrency", 1),
        ("retries", 0),
        ("repairs", 0),
        ("max_tokens", 1),
    ):
        need(getattr(c, key) >= low, f"caption.{key}", f"must be at least {low}")
    need(c.timeout_s > 0, "caption.timeout_s", "must be > 0")
    need(c.temperature >= 0, "caption.temperature", "must be >= 0")
    import taxonomy

    need(
        c.taxonomy_version is None or c.taxonomy_version in taxonomy.available_versions(),
        "caption.taxonomy_version",
        f"must be a shipped version {taxonomy.available_versions()}",
    )
    if c.captioner != "none":
        from annotators.caption.backends import make_backend

        make_backend(cfg.caption)  # raises ConfigError for a missing endpoint or model
        local = not (cfg.ray.address or os.environ.get("RAY_ADDRESS"))
        if c.captioner in ("vllm", "transformers") and local:  # on a cluster only the workers may see it
            need(
                c.model is not None and Path(c.model, "config.json").is_file(),
                "caption.model",
                "must be a local model folder with a config.json (PKS never downloads weights)",
            )


def set_in_file(path: str | Path, dotted: str, value: Any) -> None:
    """Set one value of a YAML config file in place, keeping its comments, key order and the
    style of the value it replaces (a ruamel.yaml round trip), written atomically: a reader (or
    a kill) sees the old file or the new one, never half of it."""
    from ruamel.yaml import YAML
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    from pks.store import atomic_path

    path = Path(path).resolve()  # through a symlink: the file it names is replaced, not the link
    rt = YAML()  # round trip
    rt.preserve_quotes = True
    rt.width = 4096  # the user's long lines are not re-wrapped
    # a null stays `null` (ruamel writes an empty value by default)
    rt.representer.add_representer(type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null"))
    doc = rt.load(path.read_text()) or CommentedMap()
    *parents, leaf = dotted.split(".")
    node = doc
    for k in parents:
        if not isinstance(node.get(k), dict):
            node[k] = CommentedMap()
        node = node[k]
    if isinstance(node.get(leaf), list) and isinstance(value, list):
        node[leaf][:] = value  # the same sequence: a flow [a, b, c] stays one, its comment stays beside it
    else:
        if isinstance(value, list):
            value = CommentedSeq(value)
            value.fa.set_flow_style()
        node[leaf] = value
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            rt.dump(doc, f)
        shutil.copymode(path, tmp)
