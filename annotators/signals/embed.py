"""Semantic clip embeddings with OpenCLIP, from a checkpoint file the user configures (nothing
is downloaded), for near-duplicates that perceptual hashes miss (recoloured or reframed
reuse). Optional: install the `clip` extra and set analyse.clip_embeddings.checkpoint."""

from __future__ import annotations

from collections.abc import Callable
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


# Where the search switches from exact to approximate (a named parameter of streamed_duplicates):
# below this many clips every vector is loaded (at most EXACT_BELOW x d floats, 40 MB at d=512)
# and compared exactly in chunks, which is quicker than building an index and needs no library.
# From it on, an HNSW index (hnswlib, in the `clip` extra) fed in batches holds the vectors and
# the graph instead: 4*d + 8*M + ~100 bytes per clip (measured 2.5 KB at d=512, M=16: ~2.5 GB at
# 10^6 clips), and no chunk x N similarity matrix (16 GB per 4,096-row chunk at 10^6) is ever made.
EXACT_BELOW = 20_000


def streamed_duplicates(
    ids: list[str],
    load: Callable[[list[str]], np.ndarray],
    threshold: float = 0.95,
    batch: int = 4096,
    exact_below: int = EXACT_BELOW,
    m: int = 16,
    ef_construction: int = 100,
) -> dict[str, str]:
    """semantic_duplicates over vectors that `load(ids)` reads `batch` at a time (L2-normalised
    rows, in the order of `ids`), never all in memory at once from `exact_below` clips on: each
    batch is searched against an HNSW index of the batches before it (and exactly within
    itself), then added. Each clip gets the earliest earlier clip above `threshold`, as in the
    exact search: a clip's neighbours are fetched until the farthest fetched one is below the
    threshold, and the similarity of each candidate is recomputed exactly from the vectors
    the index holds. The graph is built on one thread, so a rerun builds the same one."""
    if not ids:
        return {}
    try:
        import hnswlib
    except ImportError:  # exact, all vectors at once (pip install 'pks[clip]' for the index)
        hnswlib = None
    if len(ids) < exact_below or hnswlib is None:
        vectors = np.concatenate([load(ids[i : i + batch]) for i in range(0, len(ids), batch)])
        return semantic_duplicates(ids, vectors, threshold, chunk=max(1, min(4096, 2**24 // len(ids))))
    index = None
    dupes: dict[str, str] = {}
    for start in range(0, len(ids), batch):
        v = np.ascontiguousarray(load(ids[start : start + batch]), dtype=np.float32)
        if index is None:
            index = hnswlib.Index(space="ip", dim=v.shape[1])
            index.init_index(max_elements=len(ids), ef_construction=ef_construction, M=m, random_seed=0)
        earlier = _earliest_in_index(index, v, threshold) if start else [None] * len(v)
        within = v @ v.T
        for r, j in enumerate(earlier):
            if j is None:  # none in the earlier batches: the first earlier one in this batch
                near = np.nonzero(within[r, :r] > threshold)[0]
                j = start + int(near[0]) if len(near) else None
            if j is not None:
                dupes[ids[start + r]] = ids[j]
        index.add_items(v, np.arange(start, start + len(v)), num_threads=1)
    return dupes


def _earliest_in_index(index, v: np.ndarray, threshold: float, k: int = 16, slack: float = 1e-3) -> list[int | None]:
    """For each row of v, the smallest label in the index whose vector's inner product with it
    exceeds threshold (None when there is none). `slack` widens the approximate similarities'
    cut so that the exact recomputation, not float rounding in the index, decides."""
    n = index.get_current_count()
    k = min(k, n)
    index.set_ef(max(64, k))
    labels, dist = index.knn_query(v, k=k)
    result = []
    for r in range(len(v)):
        lab, sim = labels[r], 1 - dist[r]
        kk = k
        while kk < n and sim[-1] > threshold - slack:  # all fetched are close: there may be more
            kk = min(2 * kk, n)
            index.set_ef(max(64, kk))
            more, d = index.knn_query(v[r : r + 1], k=kk)
            lab, sim = more[0], 1 - d[0]
        cand = lab[sim > threshold - slack]
        if len(cand):
            cand = cand[np.asarray(index.get_items(cand)) @ v[r] > threshold]
        result.append(int(cand.min()) if len(cand) else None)
    index.set_ef(max(64, k))
    return result
