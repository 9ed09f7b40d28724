"""Noise that travels with the camera tag (training/camera_noise.py): each frame stays unit
normal, the frames slide exactly as the tag moves the picture, and with the option off every
draw is what it was."""

import dataclasses

import torch

from training.camera_noise import camera_noise, camera_shift, mix
from training.conditioning import draws
from training.config import CONFIG_DIR, load_train_config


def test_each_frame_is_unit_normal_and_the_frames_slide_as_the_picture_would():
    g = torch.Generator().manual_seed(0)
    n = camera_noise((16, 5, 16, 24), camera_shift(["pan_right"]), 0.25, g)
    for f in range(5):  # a sum of 16 unit normals over 4, per pixel: N(0, 1), not shrunk by interpolation
        assert abs(float(n[:, f].mean())) < 0.05 and abs(float(n[:, f].std()) - 1) < 0.05
    # a quarter latent pixel a frame: four frames on, the picture has slid one pixel left (pan right)
    assert torch.allclose(n[:, 4, :, :-1], n[:, 0, :, 1:])
    assert not torch.allclose(n[:, 1, :, :-1], n[:, 0, :, 1:])  # a quarter pixel is not a whole one
    up = camera_noise((4, 3, 8, 8), camera_shift(["tilt_up"]), 1.0, g)
    assert torch.allclose(up[:, 1, 1:], up[:, 0, :-1])  # tilting up, the picture slides down
    still = camera_noise((4, 3, 8, 8), camera_shift(["zoom_in"]), 1.0, g)
    assert torch.equal(still[:, 0], still[:, 2])
    assert camera_shift(["pan_left", "tilt_down"]) == (-1, 1) and camera_shift(None) == (0, 0)
    a, b = torch.randn(10_000), torch.randn(10_000)
    assert abs(float(mix(a, b, 0.3).std()) - 1) < 0.03


def test_draws_follow_the_camera_only_when_asked_and_are_unchanged_otherwise():
    cfg = load_train_config(CONFIG_DIR / "tiny.yaml")
    assert cfg.train.camera_noise == 0
    shape = (4, 4, 8, 14)
    plain = draws(0, 7, shape, cfg)
    assert plain["noise"].equal(draws(0, 7, shape, cfg, ["pan_left"])["noise"])  # off: the tag changes nothing
    on = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, camera_noise=1.0, camera_noise_speed=1.0))
    left = draws(0, 7, shape, on, ["pan_left"])
    assert left["t"] == plain["t"] and left["drop_text"] == plain["drop_text"]  # the other draws stay
    n = left["noise"]
    assert torch.allclose(n[:, 1, :, 1:], n[:, 0, :, :-1])  # pan left: the picture slides right
    assert left["noise"].equal(draws(0, 7, shape, on, ["pan_left"])["noise"])  # a pure function
