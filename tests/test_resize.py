"""Issue 25: pks.resize.area_resize gives cv2.resize INTER_AREA's pixels on real decoded 1080p
frames for every path it takes (uint16 sums, uint32 sums) and every case it leaves to OpenCV,
and the detectors' small frames (_small_yuv) are today's."""

from __future__ import annotations

import av
import cv2
import numpy as np
import pytest

from pks.decode import _plane, _small_yuv
from pks.resize import area_resize
from pks.synth import synthesize_video

# (w, h) from 1920 x 1080, and half of each from chroma's 960 x 540 (the detectors take chroma
# to the full size too: 64 x 36 from 960 x 540 is 15 x 15, from 1080p's luma 30 x 30):
SIZES = [
    (64, 36),  # the anime detector's: luma 30 x 30 blocks need uint32 sums, chroma 15 x 15 uint16
    (48, 27),  # TransNetV2's: luma 40 x 40 (uint32); chroma 24 x 13 is no whole factor: OpenCV
    (192, 108),  # the collector's: 10 x 10 and 5 x 5, uint16
    (320, 180),  # PySceneDetect's: 6 x 6 and 3 x 3
    (960, 540),  # 2 x 2 (OpenCV's own kernel) and 1 x 1
    (100, 60),  # no whole factor
]


@pytest.fixture(scope="module")
def frames_1080p(tmp_path_factory):
    path = tmp_path_factory.mktemp("resize") / "hd.mp4"
    synthesize_video(path, 3, n_shots=2, size=(1920, 1080), fps="24", shot_frames=(24, 25), damage_p=0)
    with av.open(str(path)) as c:
        return [f for f in c.decode(video=0)][:4]


def _cv2_area(p: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return cv2.resize(p, size, interpolation=cv2.INTER_AREA)


def test_area_resize_is_opencvs_on_decoded_frames(frames_1080p):
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (1080, 1920), dtype=np.uint8)  # every rounding tie shows
    assert frames_1080p[0].format.name == "yuv420p"
    for frame in frames_1080p:
        planes = [_plane(p) for p in frame.planes[:3]]  # strided views, as the decoder gives them
        assert planes[0].shape == (1080, 1920) and planes[1].shape == (540, 960)
        for w, h in SIZES:
            for p in [*planes, noise, noise[::2, ::2]]:
                size = (w, h) if p.shape[0] == 1080 else (w // 2, h // 2)
                np.testing.assert_array_equal(area_resize(p, size), _cv2_area(p, size), err_msg=f"{size} {p.shape}")


def test_area_resize_at_the_sum_limits():
    """White blocks: the largest sums each path holds (uint16 up to 257 pixels, then uint32)."""
    for fx, fy in [(16, 16), (17, 15), (16, 17), (30, 30), (64, 64), (255, 257)]:
        p = np.full((3 * fy, 2 * fx), 255, np.uint8)
        p[0, 0] = 254
        np.testing.assert_array_equal(area_resize(p, (2, 3)), _cv2_area(p, (2, 3)), err_msg=f"{fx} x {fy}")


def test_small_yuv_is_todays(frames_1080p):
    for frame in frames_1080p:
        for size in [(64, 36), (48, 27), (320, 180)]:
            want = [_cv2_area(_plane(p), size) for p in frame.planes[:3]]  # chroma too goes to `size`
            np.testing.assert_array_equal(_small_yuv(frame, size), np.dstack(want))
