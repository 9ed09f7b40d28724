"""What a training sample is conditioned on: which tag axes its caption labels, the tags folded
into text for the text-only ablation, and the per-sample draws (timestep, noise, guidance
dropout) seeded by the sample's place in the stream, so resumes and any number of ranks agree."""

from __future__ import annotations

import torch

import taxonomy
from pks.seeded import unit
from training.config import TrainConfig


def known_axes(record: dict) -> list[bool]:
    """Which tag axes a clip's caption actually labels: none without a caption; camera and vfx
    for the model-free `signals` captioner (style and motion are not measurable); all for a VLM
    or a human. An unlabelled axis is 'unknown' to the tag encoder, not 'empty'."""
    cap = record.get("caption")
    if not cap:
        return [False] * len(taxonomy.TAG_AXES)
    if (record.get("caption_source") or "").startswith("signals"):
        return [a in ("camera", "vfx") for a in taxonomy.TAG_AXES]
    return [True] * len(taxonomy.TAG_AXES)


def fold_tags(text: str, tags: dict[str, list[str]], shot: str | None, stage: int | None) -> str:
    """The text-only ablation: tags written into the narrative instead of the tag channel."""
    parts = [f"{a}: {', '.join(v)}" for a, v in tags.items() if v]
    parts += [f"shot: {shot}"] if shot else []
    parts += [f"stage {stage}"] if stage is not None else []
    return f"{text} [{'; '.join(parts)}]" if parts else text


def tag_lists(tags: dict[str, torch.Tensor], i: int, tax) -> dict[str, list[str]]:
    return {a: [tax.axes[a].ids[j] for j in torch.nonzero(tags[a][i]).flatten().tolist()] for a in taxonomy.TAG_AXES}


def draws(seed: int, index: int, latent_shape: tuple, cfg: TrainConfig) -> dict:
    """Everything random about one sample, from its place in the stream: timestep, noise and
    guidance dropout. Counter-based, so resume and any rank count give the same draws."""
    g = torch.Generator().manual_seed(int(unit(seed, "sample", index) * 2**62))
    tc = cfg.train
    t = torch.sigmoid(tc.logit_mean + tc.logit_std * torch.randn((), generator=g))
    s = tc.shift
    t = s * t / (1 + (s - 1) * t)  # resolution shift: more noise for more tokens (SD3)
    noise = torch.randn(latent_shape, generator=g)
    drop = torch.rand(len(taxonomy.TAG_AXES) + 4, generator=g)
    every = bool(drop[7] < tc.drop_all)  # the unconditional sample (see LoopConfig.drop_all)
    return {
        "t": t,
        "noise": noise,
        "drop_axes": (drop[:4] < tc.drop_tags) | every,
        "drop_shot": bool(drop[4] < tc.drop_tags) or every,
        "drop_stage": bool(drop[5] < tc.drop_tags) or every,
        "drop_text": bool(drop[6] < tc.drop_text) or every,
    }


def conditions(batch: dict, samples: list[dict], tax, tag_channel: bool) -> dict:
    """The model's conditioning for a batch, guidance dropout applied: tag multi-hots, known
    axes, shot and stage (-1 unknown), and the narratives to encode."""
    n = len(batch["records"])
    known = torch.tensor([known_axes(r) for r in batch["records"]])
    unspecified = (
        tax.axes[taxonomy.SHOT_AXIS].ids.index("unspecified")
        if "unspecified" in tax.axes[taxonomy.SHOT_AXIS].ids
        else -2
    )
    shot = torch.where(batch["shot"] == unspecified, -1, batch["shot"])
    stage = batch["stage"].clone()
    texts = list(batch["text"])
    for i, d in enumerate(samples):
        known[i] &= ~d["drop_axes"]
        if d["drop_shot"]:
            shot[i] = -1
        if d["drop_stage"]:
            stage[i] = -1
        if d["drop_text"]:
            texts[i] = ""
    if not tag_channel:  # ablation: the tags only as words in the narrative
        for i in range(n):
            lists = {a: v for a, v in tag_lists(batch["tags"], i, tax).items() if known[i, taxonomy.TAG_AXES.index(a)]}
            shot_name = tax.axes[taxonomy.SHOT_AXIS].ids[shot[i]] if shot[i] >= 0 else None
            texts[i] = fold_tags(texts[i], lists, shot_name, int(stage[i]) if stage[i] >= 0 else None)
        known[:] = False
        shot[:], stage[:] = -1, -1
    return {"tags": batch["tags"], "known": known, "shot": shot, "stage": stage, "texts": texts}
