"""Semantic clip embeddings with OpenCLIP, from a checkpoint file the user configures (nothing
is downloaded), for near-duplicates that perceptual hashes miss (recoloured or reframed
reuse). Optional: install the `clip` extra and set analyse.clip_embeddings.checkpoint."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np


class ClipEmbedder:
    def __init__(self, arch: str, checkpoint: str | Path, device: str = "cpu"):
        path = Path(checkpoint)
        if not path.is_file():
            raise ValueError(f"OpenCLIP checkpoint not found: {path} (PKS never downloads weights)")
        import open_clip

        self.model = open_clip.create_model(arch, pretrained=str(path), device=device).eval()
        cfg = self.model.visual.preprocess_cfg
        self.size = cfg["size"][0] if isinstance(cfg["size"], (tuple, list)) else cfg["size"]
        self.mean = np.asarray(cfg["mean"], np.float32)
        self.std = np.asarray(cfg["std"], np.float32)
        self.device = device

    def _prep(self, rgb: np.ndarray) -> np.ndarray:
        """Shortest side to the model size, centre crop, normalise (OpenCLIP's own recipe)."""
        h, w = rgb.shape[:2]
        s = self.size / min(h, w)
        img = cv2.resize(
            rgb, (max(self.size, round(w * s)), max(self.size, round(h * s))), interpolation=cv2.INTER_CUBIC
        )
        y, x = (img.shape[0] - self.size) // 2, (img.shape[1] - self.size) // 2
        img = img[y : y + self.size, x : x + self.size].astype(np.float32) / 255.0
        return ((img - self.mean) / self.std).transpose(2, 0, 1)

    def embed(self, frames: np.ndarray, k: int = 4) -> np.ndarray:
        """Mean of the L2-normalised image embeddings of k evenly spaced frames, normalised."""
        import torch

        idx = np.linspace(0, len(frames) - 1, min(k, len(frames))).round().astype(int)
        batch = torch.from_numpy(np.stack([self._prep(frames[i]) for i in idx])).to(self.device)
        with torch.inference_mode():
            e = self.model.encode_image(batch).float()
        e = torch.nn.functional.normalize(e, dim=-1).mean(0)
        return torch.nn.functional.normalize(e, dim=0).cpu().numpy()


@lru_cache(maxsize=2)
def embedder(arch: str, checkpoint: str) -> ClipEmbedder:
    """One model per worker process, loaded on first use."""
    return ClipEmbedder(arch, checkpoint)


def semantic_duplicates(
    ids: list[str], vectors: np.ndarray, threshold: float = 0.95, chunk: int = 4096
) -> dict[str, str]:
    """{clip_id: earlier clip_id} for clips whose cosine similarity to an earlier one exceeds
    `threshold` (vectors are L2-normalised; compared in chunks to bound memory)."""
    dupes: dict[str, str] = {}
    for start in range(0, len(ids), chunk):
        sims = vectors[start : start + chunk] @ vectors.T
        for row, i in enumerate(range(start, min(start + chunk, len(ids)))):
            earlier = np.nonzero(sims[row, :i] > threshold)[0]
            if len(earlier):
                dupes[ids[i]] = ids[int(earlier[0])]
    return dupes
