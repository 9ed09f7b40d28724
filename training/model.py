"""The dual-channel video DiT of the AniMatrix method, in one readable file (after
facebookresearch/DiT `models.py`, with Wan 2.x's 3D rotary embeddings and cross-attention).

    latents [B, C, T, H, W] --3D patchify--> tokens [B, N, D]
    narrative -> frozen T5-family states -> cross-attention in every block      (channel 1)
    tags      -> TagEncoder (field-value structure) + timestep -> AdaLN-Zero    (channel 2)
              modulation of self-attention, cross-attention and MLP in every block

The model returns the flow-matching velocity (noise - data) at time t in [0, 1]. With
`prediction: x0` the network itself predicts the clean clip and the velocity is derived from it
(v = (x_t - x0) / t), as in "Back to Basics: Let Denoising Generative Models Denoise" (JiT): a
narrow network (the tiny config: width 128 for 96-value pixel patches) cannot carry noise through
to its output, but it can draw a clean clip, which lies on a much smaller manifold; trained on the
same velocity loss, so nothing else in the trainer, sampler or DPO changes. With `prediction:
precond` the output is EDM's preconditioning (Karras et al. 2022) worked out for rectified flow:
for data of standard deviation s, x_t = (1 - t) x0 + t n has variance V = (1 - t)^2 s^2 + t^2, the
best linear guess of the velocity is c_skip x_t with c_skip = (t - (1 - t) s^2) / V and what it
leaves has standard deviation c_out = s / sqrt(V). The network reads x_t / sqrt(V) (unit scale) and
predicts only that residual: v = c_skip x_t + c_out F. At initialisation (F = 0) the model is
already the optimal linear denoiser, so nothing has to learn to carry the noise through.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

import taxonomy

N_STAGES = 4


@dataclass(frozen=True)
class DiTConfig:
    in_channels: int = 16  # latent channels (3 in pixel space)
    patch: tuple[int, int, int] = (1, 2, 2)  # (t, h, w)
    dim: int = 1536
    depth: int = 28
    heads: int = 12
    mlp_ratio: float = 4.0
    text_dim: int = 4096  # the text encoder's hidden size (umt5-xxl: 4096)
    rope_theta: float = 10000.0
    prediction: str = "velocity"  # velocity | x0 | precond (see the module doc)
    sigma_data: float = 0.5  # precond: the data's standard deviation (pixels in [-1, 1]: about 0.5)
    tag_std: float = 1.0  # the tag tables' initial scale (DiT's class table: 0.02; see TagEncoder)

    def to_dict(self) -> dict:
        return asdict(self)


# The registry: sizes by name (DiT-style). `base` is sized like the 1-2B open video DiTs. A
# training config's `arch` section overrides fields of its entry (recorded in RUN/config.yaml).
MODELS = {
    "tiny": DiTConfig(in_channels=3, patch=(2, 4, 4), dim=128, depth=4, heads=4, text_dim=64),
    "small": DiTConfig(in_channels=16, patch=(1, 2, 2), dim=1024, depth=16, heads=16, text_dim=4096),
    "base": DiTConfig(in_channels=16, patch=(1, 2, 2), dim=1536, depth=28, heads=12, text_dim=4096),
}


# Below this t the derived velocity (x_t - x0) / t would amplify the network's error without
# bound; JiT clips the same division at 0.05. The sampler's last step (t = 1/steps) still lands
# within 0.05 - t of the noise of x0.
X0_MIN_T = 0.05


def model_config(name: str, arch: dict | None = None) -> DiTConfig:
    """A registry entry with a training config's `arch` overrides (lists become tuples)."""
    from dataclasses import fields, replace

    if name not in MODELS:
        raise ValueError(f"model must be one of {', '.join(MODELS)}, got {name!r}")
    arch = dict(arch or {})
    unknown = sorted(set(arch) - {f.name for f in fields(DiTConfig)})
    if unknown:
        raise ValueError(f"unknown arch keys {unknown}")
    if arch.get("prediction", "velocity") not in ("velocity", "x0", "precond"):
        raise ValueError(f"arch.prediction must be velocity, x0 or precond, got {arch['prediction']!r}")
    overrides: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in arch.items()}
    return replace(MODELS[name], **overrides)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale[:, None]) + shift[:, None]


# ---- position: factorised 3D rotary embeddings ------------------------------------------
def rope_angles(grid: tuple[int, int, int], head_dim: int, theta: float = 10000.0) -> torch.Tensor:
    """Rotation angles [T*H*W, head_dim/2] for a (t, h, w) token grid: the head dimension is
    split between time and the two spatial axes (as in Wan), each with its own frequencies."""
    d_hw = 2 * (head_dim // 6)
    dims = (head_dim - 2 * d_hw, d_hw, d_hw)
    per_axis = []
    for n, d in zip(grid, dims):
        freqs = 1.0 / theta ** (torch.arange(0, d, 2, dtype=torch.float64) / d)
        per_axis.append(torch.outer(torch.arange(n, dtype=torch.float64), freqs))
    t, h, w = grid
    angles = torch.cat(
        [
            per_axis[0][:, None, None].expand(t, h, w, -1),
            per_axis[1][None, :, None].expand(t, h, w, -1),
            per_axis[2][None, None, :].expand(t, h, w, -1),
        ],
        dim=-1,
    )
    return angles.reshape(t * h * w, head_dim // 2).float()


def sincos_3d(grid: tuple[int, int, int], dim: int) -> torch.Tensor:
    """Fixed absolute position embeddings [T*H*W, dim] (DiT's sin-cos, factorised over t, h, w
    with the same split as the rotary angles). RoPE alone makes the network translation-
    equivariant, so a token cannot tell where in the frame it is; small models need that to lay
    out a picture from noise."""
    angles = rope_angles(grid, dim)  # [N, dim/2]
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def apply_rope(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Rotate consecutive pairs of x [B, heads, N, head_dim] by the angles [N, head_dim/2]."""
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).flatten(-2)


# ---- conditioning ----------------------------------------------------------------------
class TimestepEmbedder(nn.Module):
    """t in [0, 1] -> sinusoidal features -> MLP (DiT's, with t scaled to 0..1000)."""

    def __init__(self, dim: int, freq_dim: int = 256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.freq_dim // 2
        freqs = torch.exp(-math.log(10000) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
        args = 1000 * t.float()[:, None] * freqs[None]
        dtype = cast(nn.Linear, self.mlp[0]).weight.dtype
        return self.mlp(torch.cat([torch.cos(args), torch.sin(args)], dim=-1).to(dtype))


class TagEncoder(nn.Module):
    """Channel 2: production tags with their field-value structure kept.

    Each multi-label axis (style, motion, camera, vfx) has its own value table: one row per tag,
    plus `none` (the axis is known and has no tag) and `unknown` (not labelled, or dropped for
    guidance); a tag's vector is its row plus the axis's field embedding, and an axis's tags are
    mean-pooled. Shot size is one value of its field (or unknown); the curriculum stage (the
    deformation level) is a field of its own. The field vectors are concatenated, not summed,
    and mixed by an MLP into one vector that joins the timestep embedding."""

    def __init__(self, tax, dim: int, init_std: float = 1.0):
        super().__init__()
        self.axes = taxonomy.TAG_AXES
        self.sizes = {a: len(tax.axes[a].ids) for a in self.axes}
        self.values = nn.ModuleDict({a: nn.Embedding(n + 2, dim) for a, n in self.sizes.items()})
        self.n_shots = len(tax.axes[taxonomy.SHOT_AXIS].ids)
        self.shot = nn.Embedding(self.n_shots + 1, dim)
        self.stage = nn.Embedding(N_STAGES + 1, dim)
        self.fields = nn.Embedding(len(self.axes) + 2, dim)
        self.mix = nn.Sequential(nn.Linear(dim * (len(self.axes) + 2), dim), nn.SiLU(), nn.Linear(dim, dim))
        # Unit-scale rows (nn.Embedding's own default), not DiT's 0.02: at 0.02 two camera tags
        # differed by 4 % of the conditioning vector after 200 steps (the timestep embedding grows
        # to ~2) and the model's outputs by 0.04 %, so a short run learnt to ignore the tags
        # (issue 21's diagnosis, BENCHMARKS.md).
        for e in (*self.values.values(), self.shot, self.stage, self.fields):
            nn.init.normal_(cast(nn.Embedding, e).weight, std=init_std)

    def fields_of(
        self, tags: dict[str, torch.Tensor], known: torch.Tensor, shot: torch.Tensor, stage: torch.Tensor
    ) -> torch.Tensor:
        """Per-field vectors [B, fields, dim]. tags: multi-hot [B, n_axis_tags] per axis;
        known: bool [B, 4] per axis; shot, stage: long [B], -1 = unknown."""
        out = []
        for i, a in enumerate(self.axes):
            n, table = self.sizes[a], cast(nn.Embedding, self.values[a]).weight
            m = tags[a].to(table.dtype)
            count = m.sum(1, keepdim=True)
            pooled = torch.where(count > 0, (m @ table[:n]) / count.clamp(min=1), table[n])  # n: none
            pooled = torch.where(known[:, i : i + 1], pooled, table[n + 1])  # n + 1: unknown
            out.append(pooled + self.fields.weight[i])
        out.append(self.shot(torch.where(shot < 0, self.n_shots, shot)) + self.fields.weight[len(self.axes)])
        out.append(self.stage(torch.where(stage < 0, N_STAGES, stage)) + self.fields.weight[len(self.axes) + 1])
        return torch.stack(out, dim=1)

    def forward(self, tags, known, shot, stage) -> torch.Tensor:
        return self.mix(self.fields_of(tags, known, shot, stage).flatten(1))


# ---- the blocks ------------------------------------------------------------------------
class Attention(nn.Module):
    """Multi-head attention with RMS-normalised queries and keys; self-attention takes rotary
    angles, cross-attention takes a key padding mask."""

    def __init__(self, dim: int, heads: int, kv_dim: int | None = None):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(kv_dim or dim, 2 * dim)
        self.norm_q, self.norm_k = nn.RMSNorm(dim // heads), nn.RMSNorm(dim // heads)
        self.out = nn.Linear(dim, dim)

    def forward(self, x, context=None, angles=None, mask=None):
        b, n, d = x.shape
        context = x if context is None else context
        q = self.q(x).view(b, n, self.heads, -1).transpose(1, 2)
        k, v = self.kv(context).view(b, context.shape[1], 2, self.heads, -1).permute(2, 0, 3, 1, 4)
        q, k = self.norm_q(q), self.norm_k(k)
        if angles is not None:
            q, k = apply_rope(q, angles), apply_rope(k, angles)
        attn_mask = mask[:, None, None, :] if mask is not None else None  # True = attend
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.out(y.transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    """Self-attention, cross-attention to the narrative, MLP; each modulated (shift, scale,
    gate) by the conditioning vector through AdaLN-Zero: the modulation is zero at init, so
    every block starts as the identity."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.cross = Attention(dim, heads)
        self.norm3 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(dim, 9 * dim))
        ada = cast(nn.Linear, self.ada[1])
        nn.init.zeros_(ada.weight)
        nn.init.zeros_(ada.bias)

    def forward(self, x, c, text, text_mask, angles):
        s1, k1, g1, s2, k2, g2, s3, k3, g3 = self.ada(c).chunk(9, dim=-1)
        x = x + g1[:, None] * self.attn(modulate(self.norm1(x), s1, k1), angles=angles)
        x = x + g2[:, None] * self.cross(modulate(self.norm2(x), s2, k2), context=text, mask=text_mask)
        return x + g3[:, None] * self.mlp(modulate(self.norm3(x), s3, k3))


class FinalLayer(nn.Module):
    def __init__(self, dim: int, out: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))
        self.linear = nn.Linear(dim, out)
        ada = cast(nn.Linear, self.ada[1])
        for p in (ada.weight, ada.bias, self.linear.weight, self.linear.bias):
            nn.init.zeros_(p)

    def forward(self, x, c):
        shift, scale = self.ada(c).chunk(2, dim=-1)
        return self.linear(modulate(self.norm(x), shift, scale))


class VideoDiT(nn.Module):
    def __init__(self, cfg: DiTConfig, tax=None):
        super().__init__()
        self.cfg = cfg
        tax = tax or taxonomy.load()
        d = cfg.dim
        self.patchify = nn.Conv3d(cfg.in_channels, d, kernel_size=cfg.patch, stride=cfg.patch)
        self.t_embed = TimestepEmbedder(d)
        self.tags = TagEncoder(tax, d, cfg.tag_std)
        self.text_proj = nn.Sequential(nn.Linear(cfg.text_dim, d), nn.GELU(approximate="tanh"), nn.Linear(d, d))
        self.blocks = nn.ModuleList(Block(d, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.depth))
        self.final = FinalLayer(d, math.prod(cfg.patch) * cfg.in_channels)
        self.grad_checkpointing = False
        w = self.patchify.weight.data  # as DiT: the patch projection initialised like a linear layer
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        assert self.patchify.bias is not None  # made with a bias
        nn.init.zeros_(self.patchify.bias)

    def condition(self, t, tags, known, shot, stage) -> torch.Tensor:
        """The vector that drives AdaLN in every block: timestep + tag channel."""
        return self.t_embed(t) + self.tags(tags, known, shot, stage)

    def forward(self, x, t, text, text_mask, tags, known, shot, stage) -> torch.Tensor:
        """x: [B, C, T, H, W] noisy latents; t: [B] in [0, 1]; text: [B, L, text_dim] states with
        text_mask [B, L] (True = a real token); tags/known/shot/stage as TagEncoder takes them.
        Returns the predicted velocity, shaped like x."""
        b, c, T, H, W = x.shape
        pt, ph, pw = self.cfg.patch
        if T % pt or H % ph or W % pw:
            raise ValueError(f"latent size {(T, H, W)} is not divisible by the patch {self.cfg.patch}")
        grid = (T // pt, H // ph, W // pw)
        tt = t.view(-1, 1, 1, 1, 1).to(x.dtype)
        inp = x
        if self.cfg.prediction == "precond":
            s2 = self.cfg.sigma_data**2
            var = (1 - tt) ** 2 * s2 + tt**2
            c_in = var.rsqrt()
            c_skip, c_out = (tt - (1 - tt) * s2) / var, self.cfg.sigma_data * c_in
            inp = x * c_in  # the network reads x_t at unit scale
        tokens = self.patchify(inp)
        tokens = tokens.flatten(2).transpose(1, 2)  # [B, N, D]
        tokens = tokens + sincos_3d(grid, self.cfg.dim).to(tokens.device, tokens.dtype)
        angles = rope_angles(grid, self.cfg.dim // self.cfg.heads, self.cfg.rope_theta).to(x.device)
        cond = self.condition(t, tags, known, shot, stage)
        context = self.text_proj(text)
        for block in self.blocks:
            if self.grad_checkpointing and self.training:
                tokens = checkpoint(block, tokens, cond, context, text_mask, angles, use_reentrant=False)
            else:
                tokens = block(tokens, cond, context, text_mask, angles)
        out = self.final(tokens, cond)  # [B, N, pt*ph*pw*C]
        out = out.view(b, *grid, pt, ph, pw, c).permute(0, 7, 1, 4, 2, 5, 3, 6).reshape(b, c, T, H, W)
        if self.cfg.prediction == "x0":  # the network drew the clean clip: its velocity
            return (x - out) / tt.clamp(min=X0_MIN_T)
        if self.cfg.prediction == "precond":
            return c_skip * x + c_out * out
        return out


def flops_per_step(cfg: DiTConfig, tokens: int, text_tokens: int, batch: int) -> float:
    """Training FLOPs of one step (forward + backward = 3x forward), counting matmuls:
    2 FLOPs per multiply-add; attention scores and values included."""
    d, hidden = cfg.dim, int(cfg.dim * cfg.mlp_ratio)
    per_token = (
        2 * d * 3 * d
        + 2 * d * d  # self-attention projections (q, kv, out)
        + 2 * d * d * 2  # cross-attention q and out
        + 2 * d * hidden * 2  # MLP
        + 4 * tokens * d  # self-attention scores and weighted sum
        + 4 * text_tokens * d
    )  # cross-attention scores and weighted sum
    cross_kv = 2 * text_tokens * d * 2 * d  # per sample, per block
    forward = batch * cfg.depth * (tokens * per_token + cross_kv)
    return 3.0 * forward
