"""Synthetic cel-shaded anime footage with exact ground truth, for tests and benchmarks."""

from pks.synth.video import synthesize, synthesize_video

__all__ = ["synthesize", "synthesize_video"]
