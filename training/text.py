"""Channel 1: the narrative through a frozen T5-family text encoder (T5 / UMT5, loaded with
`transformers` from a local folder; nothing is downloaded), its token states fed to the
generator's cross-attention. States are cached per narrative, so a run never encodes the same
text twice (captions repeat a lot, and the empty narrative of guidance dropout is one entry)."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections import OrderedDict
from pathlib import Path

import torch

from pks.store import TMP_MARK
from training.config import TrainConfig


class TextEncoder:
    def __init__(
        self, path: str | Path, max_length: int = 64, device: str | torch.device = "cpu", cache_size: int = 100_000
    ):
        from transformers import AutoTokenizer, PreTrainedModel, T5EncoderModel, UMT5EncoderModel
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()

        path = Path(path)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"no text encoder in {path} (a local T5-family folder; PKS never downloads)")
        kind = json.loads((path / "config.json").read_text()).get("model_type")
        encoders: dict[str, type[PreTrainedModel]] = {"t5": T5EncoderModel, "umt5": UMT5EncoderModel}
        cls = encoders.get(kind)
        if cls is None:
            raise ValueError(f"{path}: model_type {kind!r} is not a T5-family encoder (t5, umt5)")
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        # (transformers wraps PreTrainedModel.to so that mypy does not bind self)
        self.model = cls.from_pretrained(path).to(device).eval().requires_grad_(False)  # type: ignore[arg-type]
        self.dim = self.model.config.d_model
        self.max_length, self.device = max_length, device
        self.cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.cache_size = cache_size
        self.encoded = 0  # texts that went through the model (the rest came from the cache)

    @torch.no_grad()
    def states(self, texts: list[str]) -> list[torch.Tensor]:
        """Per text, its token states [L_i, dim] (real tokens only), from the cache when seen."""
        todo = list(dict.fromkeys(t for t in texts if t not in self.cache))
        if todo:
            tok = self.tokenizer(
                todo, max_length=self.max_length, truncation=True, padding=True, return_tensors="pt"
            ).to(self.device)
            hidden = self.model(**tok).last_hidden_state.float().cpu()
            for text, h, m in zip(todo, hidden, tok["attention_mask"].bool().cpu()):
                self.cache[text] = h[m].clone()
            self.encoded += len(todo)
            while len(self.cache) > self.cache_size:
                self.cache.popitem(last=False)
        for t in texts:
            self.cache.move_to_end(t)
        return [self.cache[t] for t in texts]

    def __call__(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded states [B, L, dim] and mask [B, L] (True = a real token)."""
        return pad_states(self.states(texts))


def pad_states(states: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack variable-length states [L_i, dim] into [B, L, dim] with a mask (True = real)."""
    n = max(1, max(s.shape[0] for s in states))
    out = torch.zeros(len(states), n, states[0].shape[-1])
    mask = torch.zeros(len(states), n, dtype=torch.bool)
    for i, s in enumerate(states):
        out[i, : len(s)], mask[i, : len(s)] = s, True
    return out, mask


def text_encoder_path(cfg: TrainConfig, run: Path) -> Path:
    """The configured T5-family folder, or a tiny random UMT5 built once into RUN/."""
    te = cfg.text_encoder
    if te.path:
        return Path(te.path)
    path = run / "text_encoder"
    if not (path / "config.json").is_file():
        from training.tiny import build_text_encoder

        tmp = run / f"text_encoder{TMP_MARK}{uuid.uuid4().hex}"  # a folder: built whole, then renamed
        try:
            build_text_encoder(tmp, d_model=te.tiny_dim, seed=cfg.train.seed)
            os.replace(tmp, path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return path
