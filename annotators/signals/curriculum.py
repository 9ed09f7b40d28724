"""Style-Motion-Deformation curriculum: stage 0 (near-physical) .. 3 (extreme deformation)."""

from __future__ import annotations

import numpy as np

from pks.jobconfig import CurriculumConfig


def stage(deformation: float | None, motion: float | None, cfg: CurriculumConfig) -> int:
    """Stage from deformation thresholds; very fast foreground motion moves a clip up one."""
    if deformation is None:
        return 0
    k = int(sum(deformation >= t for t in sorted(cfg.deformation)))
    boost = cfg.motion_boost
    if boost is not None and motion is not None and motion >= boost:
        k += 1
    return min(k, 3)


def calibrate(deformation_scores: list[float], quantiles=(0.25, 0.5, 0.75)) -> list[float]:
    """Thresholds that split clips into four equal stages by deformation."""
    x = np.asarray([d for d in deformation_scores if d is not None], float)
    if len(x) < 4:
        raise ValueError(f"need at least 4 analysed clips to calibrate, have {len(x)}")
    return [round(float(q), 4) for q in np.quantile(x, quantiles)]
