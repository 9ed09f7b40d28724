"""Camera tags from the bitstream's motion vectors, on clips whose camera is known exactly."""

import dataclasses

import cv2
import numpy as np
import pytest

from annotators.signals.motion import MotionParams
from annotators.signals.mvcamera import mv_camera, read_spans
from pks.config import load_config
from pks.videoio import Mp4Writer

CAM = dataclasses.asdict(load_config().analyse.camera)
W, H, N = 320, 180, 48


def texture(seed: int = 0) -> np.ndarray:
    """A grey world with detail everywhere (so every block's vector is motion, not a guess)."""
    rng = np.random.default_rng(seed)
    t = cv2.GaussianBlur((rng.random((H + 200, W + 400)) * 255).astype(np.float32), (0, 0), 2)
    return cv2.normalize(t, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)


def clip(tmp_path, name: str, offsets) -> str:
    """A window over the world at (x, y) = offsets[k] in frame k, encoded as the project encodes
    (libx264 veryfast: P- and B-frames)."""
    world = texture()
    path = tmp_path / f"{name}.mp4"
    with Mp4Writer(path, 24, W, H) as out:
        for x, y in offsets:
            out.write(np.dstack([world[100 + y : 100 + y + H, 200 + x : 200 + x + W]] * 3))
    return str(path)


def tags(path: str):
    (col,) = read_spans(path, [(0, N)], MotionParams())
    return mv_camera(col.fits, CAM)


@pytest.mark.parametrize(
    "name, dx, dy, want",
    [
        # The window slides right: the picture moves left on screen, the view goes right.
        ("right", 3, 0, "pan_right"),
        ("left", -3, 0, "pan_left"),
        ("down", 0, 2, "tilt_down"),
    ],
)
def test_a_slide_reads_its_direction_and_rate(tmp_path, name, dx, dy, want):
    got, stats = tags(clip(tmp_path, name, [(dx * k, dy * k) for k in range(N)]))
    assert got == [want]
    assert stats["p_frames"] >= 8  # the estimate comes from P-frames only
    # The rate per frame, although each P-frame sees the move over several frames (B-frames between).
    assert stats["pan_per_frame"] == pytest.approx(-dx / W, abs=0.1 / W)
    assert stats["tilt_per_frame"] == pytest.approx(-dy / W, abs=0.1 / W)


def test_a_still_camera_reads_static(tmp_path):
    got, stats = tags(clip(tmp_path, "still", [(0, 0)] * N))
    assert got == ["static"]
    assert abs(stats["pan_per_frame"]) < 1e-4 and abs(stats["tilt_per_frame"]) < 1e-4


def test_a_shake_reads_shake_though_p_frames_are_frames_apart(tmp_path):
    # The camera jumps to a new place each frame (up to 2 px): one frame's move, not a rate, so
    # a P-frame several frames after its anchor must not read it divided down to nothing.
    rng = np.random.default_rng(1)
    got, _ = tags(clip(tmp_path, "shake", [tuple(rng.integers(-2, 3, 2)) for _ in range(N)]))
    assert got == ["shake"]


def test_an_eased_zoom_reads_zoom_in(tmp_path):
    # A zoom that speeds up and slows down (as painted footage's camera moves do): the P-frames at
    # its slow ends move less per frame than the span's typical rate, and must still read a zoom.
    world = texture()
    path = tmp_path / "zoom.mp4"
    with Mp4Writer(path, 24, W, H) as out:
        for k in range(N):
            s = np.exp(0.6 * (1 - np.cos(np.pi * k / (N - 1))) / 2)  # scale 1 -> e^0.6, eased
            w, h = W / s, H / s
            x0, y0 = 200 + (W - w) / 2, 100 + (H - h) / 2
            A = np.float32([[s, 0, -x0 * s], [0, s, -y0 * s]])
            out.write(np.dstack([cv2.warpAffine(world, A, (W, H), flags=cv2.INTER_LINEAR)] * 3))
    got, stats = tags(str(path))
    assert got == ["zoom_in"]
    assert stats["zoom_per_frame"] > 0
