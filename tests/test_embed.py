"""OpenCLIP embeddings from a local checkpoint (random ViT-B-32 weights saved by the test)."""

import subprocess
import sys

import numpy as np
import pytest

import support.tv_ops  # noqa: F401  (the PyPI torchvision is a CUDA build; see the module)
from annotators.signals.embed import ClipEmbedder, semantic_duplicates
from test_signals import clip, render


def test_an_interpreter_of_the_venv_loads_torch_only_when_asked():
    """The torchvision shim (support/tv_ops.py, a .pth in the test venvs) registers on
    torchvision's first import: an interpreter that never asks for torchvision does not load torch
    (it cost every `pks` subprocess and Ray worker about 1.5 s), and one that does gets a working
    torchvision."""

    def python(code):
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)

    bare = python("import sys; print('torch' in sys.modules)")
    assert bare.returncode == 0 and bare.stdout.strip() == "False", bare.stderr[-2000:]
    tv = python("import torchvision, torch; print(torch.ops.torchvision.nms)")
    assert tv.returncode == 0, tv.stderr[-2000:]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    open_clip = pytest.importorskip("open_clip")
    import torch

    path = tmp_path_factory.mktemp("clip") / "vit_b32_random.pt"
    torch.manual_seed(0)
    torch.save(open_clip.create_model("ViT-B-32", pretrained=None).state_dict(), path)
    return path


def test_missing_checkpoint_is_refused_not_downloaded(tmp_path):
    with pytest.raises(ValueError, match="never downloads"):
        ClipEmbedder("ViT-B-32", tmp_path / "nope.pt")


def test_reencoded_clip_is_closer_than_another_shot(checkpoint):
    import cv2

    e = ClipEmbedder("ViT-B-32", checkpoint)
    a = render(seed=3, location=5)
    b = render(seed=9, location=77, camera="pan_left", camera_speed=3.0)
    a2 = [cv2.GaussianBlur(f, (5, 5), 0) for f in a]
    va, vb, va2 = (e.embed(clip(x).rgb) for x in (a, b, a2))
    assert np.linalg.norm(va) == pytest.approx(1.0, abs=1e-5)
    assert float(va @ va2) > float(va @ vb)
    assert np.allclose(e.embed(clip(a).rgb), va, atol=1e-6)  # deterministic: the same clip, the same vector
    assert semantic_duplicates(["a", "b", "a_again"], np.stack([va, vb, va]), 0.999) == {"a_again": "a"}


def test_semantic_duplicates_pairs_each_clip_with_its_first_close_one():
    def unit(deg):  # unit vectors at known angles: cos(10 deg) = 0.985, cos(30 deg) = 0.866
        return np.array([np.cos(np.radians(deg)), np.sin(np.radians(deg))])

    ids = ["a", "b", "c", "d"]
    vecs = np.stack([unit(0), unit(30), unit(10), unit(90)])
    assert semantic_duplicates(ids, vecs, 0.95) == {"c": "a"}
    assert semantic_duplicates(ids, vecs, 0.8) == {"b": "a", "c": "a"}
    assert semantic_duplicates(ids, vecs, 0.8, chunk=1) == {"b": "a", "c": "a"}  # chunking changes nothing
