"""Clip analysis: timing, camera motion, foreground motion, deformation, failures, duplicates,
curriculum stage. `analyse` is the plain per-clip function; pipelines/ wraps it for Ray."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import fields

from annotators.signals.curriculum import stage
from annotators.signals.dedupe import signature
from annotators.signals.frames import ClipFrames, load_clip
from annotators.signals.motion import MotionAnalyser, MotionParams, summarise
from annotators.signals.quality import QualityParams, quality_flags
from pks.jobconfig import AnalyseConfig, CurriculumConfig


def params(cls, overrides: dict | None):
    """`cls` with the config's overrides; an unknown field name is a ValueError."""
    known = {f.name for f in fields(cls)}
    bad = set(overrides or {}) - known
    if bad:
        raise ValueError(f"unknown {cls.__name__} field(s) {sorted(bad)}")
    return cls(**(overrides or {}))


def analyse(clip: ClipFrames, a: AnalyseConfig, cur: CurriculumConfig) -> dict:
    """Record fields for one clip: cadence, held_ratio, camera_motion, motion_score,
    deformation_score, smear_frames, impact_frames, quality_flags, curriculum_stage, phash,
    and `signals` (JSON with the measurements behind them)."""
    mp = params(MotionParams, a.motion)
    res = MotionAnalyser(mp).run(clip.rgb)
    out = summarise(res, mp, dataclasses.asdict(a.camera))  # motion.py reads the thresholds as a dict
    flags, qstats = quality_flags(
        clip.rgb,
        clip.luma,
        [q.changed for q in res.pairs],
        clip.fps,
        params(QualityParams, a.quality),
        a.min_frames,
        [q.flow_mag for q in res.pairs],
    )
    details = {
        "camera": out.pop("camera"),
        "deformation_raw": out.pop("deformation_raw"),
        "flow_magnitude": out.pop("flow_magnitude"),
        "quality": qstats,
        "smear_at": out.pop("smear_at"),
        "impact_at": out.pop("impact_at"),
    }  # frame markers for the audit
    if out.pop("scene_changes"):  # two shots in one clip: never deformation, never training data
        flags.append("multi_shot")
    out["quality_flags"] = flags
    out["curriculum_stage"] = stage(out["deformation_score"], out["motion_score"], cur)
    out["phash"] = signature(clip.rgb)
    out["signals"] = json.dumps(details, sort_keys=True)
    return out


__all__ = ["ClipFrames", "MotionParams", "QualityParams", "analyse", "load_clip", "params"]
