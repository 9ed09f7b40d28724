"""`pks train encode`: curriculum shards -> latent shards, as real video trainers do: the VAE
latents and the narrative's text states are computed once, so epochs never re-run the VAE.

A latent shard mirrors its source shard (same name, samples, order; the same index.parquet),
each sample holding `latent.npy` (float16 [C, T', H', W'], the clip's first `data.frames`
frames at `data.fps` and `data.size`), `text.npy` (float16 [L, dim]) and the record `json`.
A latent shard is kept on a rerun while its source shard and the encoding settings are
unchanged (the same fingerprint scheme as `pks shard`). `LATENTS/encode.json` says how they
were made; `pks train LATENTS ...` reads them with `LatentLoader`.
"""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import cast

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from pks.progress import bar as progress_bar
from pks.shardfile import digest, sample_ranges, write_tar, written_fingerprint
from training.config import TrainConfig
from training.data import (
    CurriculumLoader,
    collate_conditions,
    decode_clip,
    shards_root,
    tag_targets,
)
from training.devices import default_device
from training.text import TextEncoder, text_encoder_path
from training.vae import latent_space

log = logging.getLogger(__name__)
EMPTY_TEXT = "empty_text.npy"  # the states of "" (guidance dropout of the narrative)


def npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def encode_shards(
    source: str | Path, out: str | Path, cfg: TrainConfig, progress=None, device: str | torch.device | None = None
) -> dict:
    """Encode a run's shards into latent shards at `out` (device: default the GPU when there is
    one). `progress` takes a line per shard written (default: this module's log)."""
    import webdataset as wds

    root, out = shards_root(source), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    te_path = text_encoder_path(cfg, out)
    device = torch.device(device or default_device())
    text = TextEncoder(te_path, cfg.text_encoder.max_length, device)
    space = latent_space(cfg, device)
    dc = cfg.data
    settings = {
        "latent": cfg.latent.to_dict(),
        "text_encoder": str(te_path.resolve()),
        "frames": dc.frames,
        "fps": dc.fps,
        "size": list(dc.size),
        "max_length": cfg.text_encoder.max_length,
    }
    index = pq.read_table(root / "index.parquet")
    shards = cast("list[str]", list(dict.fromkeys(index.column("shard").to_pylist())))  # never null
    kept = written = 0
    bar = progress_bar(len(shards), "pks train encode", "shard")
    for name in shards:
        fingerprint = digest(written_fingerprint(root / name), json.dumps(settings, sort_keys=True))
        if written_fingerprint(out / name) == fingerprint:
            kept += 1
            log.debug(f"  {name}: kept")
            bar.update(1)
            continue

        def samples(name=name):
            for s in wds.WebDataset(str(root / name), shardshuffle=False, empty_check=False):
                record = json.loads(s["json"])
                video = decode_clip(s["mp4"], record["fps"], dc.frames, dc.fps, dc.size)
                if len(video) < dc.frames:  # shorter than the window: out of the stream (never padded)
                    continue
                latent = space.encode(torch.from_numpy(video).permute(0, 3, 1, 2)[None].to(device))[0].cpu()
                narrative = (record.get("caption") or {}).get("narrative", "")
                (states,) = (s.cpu() for s in text.states([narrative]))
                yield (
                    s["__key__"],
                    {
                        "latent.npy": npy(latent.numpy().astype(np.float16)),
                        "text.npy": npy(states.numpy().astype(np.float16)),
                        "json": s["json"],
                    },
                )

        write_tar(out / name, fingerprint, samples())
        written += 1
        (progress or log.info)(f"  {name}: encoded")
        bar.update(1)
    bar.close()
    np.save(out / EMPTY_TEXT, text.states([""])[0].cpu().numpy().astype(np.float16))
    pq.write_table(latent_index(index, out), out / "index.parquet")
    (out / "encode.json").write_text(json.dumps(settings, indent=1))
    return {
        "shards": len(shards),
        "kept": kept,
        "written": written,
        "samples": index.num_rows,
        "out": str(out),
        "text_encoded": text.encoded,
    }


def latent_index(index: pa.Table, out: Path) -> pa.Table:
    """The source index with each sample's byte range in its latent shard (the loader reads
    one range per sample; the source's ranges point into the video tars), less the clips too
    short for the window, which have no latent."""
    rows = index.to_pylist()
    ranges = {name: sample_ranges(out / name) for name in {r["shard"] for r in rows}}
    rows = [r for r in rows if r["clip_id"] in ranges[r["shard"]]]
    for r in rows:
        r["offset"], r["length"] = ranges[r["shard"]][r["clip_id"]]
    return pa.Table.from_pylist(rows, schema=index.schema)


class LatentLoader(CurriculumLoader):
    """CurriculumLoader over latent shards: the same stage mix, resume and rank split; samples
    carry latents and text states instead of video."""

    def sample(self, raw: dict, index: int = 0) -> dict:
        record = json.loads(raw["json"])
        tags, shot = tag_targets(record.get("caption"), self.tax)
        return {
            "index": index,
            "latent": np.load(io.BytesIO(raw["latent.npy"])).astype(np.float32),
            "text_states": torch.from_numpy(np.load(io.BytesIO(raw["text.npy"])).astype(np.float32)),
            "text": (record.get("caption") or {}).get("narrative", ""),
            "tags": tags,
            "shot": shot,
            "stage": record["curriculum_stage"],
            "record": record,
        }

    @staticmethod
    def collate(samples: list[dict], step: int) -> dict:
        return {
            **collate_conditions(samples, step),
            "latent": torch.from_numpy(np.stack([s["latent"] for s in samples])),
            "text_states": [s["text_states"] for s in samples],
        }
