"""The clip record: the one data model every stage reads and writes (see ARCHITECTURE.md).

A record is a plain dataclass so stages stay ordinary functions; `to_row`/`from_row` convert
to the dict form that Ray Data and Arrow carry, and `SCHEMA` fixes the Parquet layout.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

STATUSES = ("ok", "rejected", "error")
TRANSITIONS = ("start", "cut", "fade", "dissolve")
# Failures, never art: what analysis may flag and shard.reject_flags may keep out.
QUALITY_FLAGS = (
    "decode_error",
    "interlaced",
    "block_corruption",
    "decoder_garbage",
    "frozen",
    "near_black",
    "letterbox",
    "pillarbox",
    "too_short",
    "duplicate",
    "multi_shot",
)
# The prefix of rejections the shard stage records (a rerun of it judges them again).
SHARD_REJECT = "shard: "
# The flags that mean broken footage (no animator draws them), as opposed to formats
# (letterbox), length or duplicates: what benchmarks count as defects and the Judge learns from.
# decode_error: frames the decoder lost, concealed or was given twice (pks.decode.DecodeMarks).
DEFECT_FLAGS = ("decode_error", "interlaced", "block_corruption", "decoder_garbage", "frozen", "multi_shot")


def empty_caption() -> dict:
    return {"narrative": "", "style": [], "motion": [], "camera": [], "vfx": [], "shot": ""}


@dataclass
class ClipRecord:
    video_id: str
    source_path: str
    start_frame: int = 0
    end_frame: int = 0  # exclusive
    fps: float = 0.0  # the clip's constant rate (a variable-rate source is resampled to it: `retimed`)
    width: int = 0
    height: int = 0
    transition_in: str = "start"
    cadence: float | None = None
    held_ratio: float | None = None
    camera_motion: list[str] = field(default_factory=list)
    motion_score: float | None = None
    deformation_score: float | None = None
    smear_frames: int | None = None
    impact_frames: int | None = None
    quality_flags: list[str] = field(default_factory=list)
    curriculum_stage: int | None = None
    judge_score: float | None = None  # the Judge's 1 clean .. 0 failure (`pks judge score`)
    phash: str = ""  # perceptual-hash signature of sampled frames (near-duplicate search)
    duplicate_of: str = ""  # clip_id of the earlier clip this one nearly repeats
    signals: str = ""  # JSON: the measurements behind the analysis fields (magnitudes, stats)
    caption: dict | None = None
    caption_source: str = ""
    status: str = "ok"
    error: str = ""
    # (Added later, so last: positional construction keeps its meaning.)
    # Seconds from the source's first frame, from the frames' timestamps; left None, they are
    # frame / fps (the same on a constant-rate grid).
    start_s: float | None = None
    end_s: float | None = None
    clip_frames: int | None = None  # frames in the clip file when they differ from the span's (retimed)
    retimed: str = ""  # how a variable-rate span became a constant-rate clip (see pks.timing)

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")
        if self.transition_in not in TRANSITIONS:
            raise ValueError(f"transition_in must be one of {TRANSITIONS}, got {self.transition_in!r}")
        if self.end_frame < self.start_frame:
            raise ValueError(f"end_frame {self.end_frame} < start_frame {self.start_frame}")
        if self.start_s is None:
            self.start_s = self.start_frame / self.fps if self.fps else 0.0
        if self.end_s is None:
            self.end_s = self.end_frame / self.fps if self.fps else 0.0

    # Derived, never stored separately, so they cannot disagree with the span.
    @property
    def clip_id(self) -> str:
        return clip_id(self.video_id, self.start_frame, self.end_frame)

    @property
    def n_frames(self) -> int:
        return self.end_frame - self.start_frame

    @property
    def frames_in_clip(self) -> int:
        """Frames the clip file holds: the span's, or the resampled count of a retimed clip."""
        return self.n_frames if self.clip_frames is None else self.clip_frames

    def to_row(self) -> dict[str, Any]:
        row = dataclasses.asdict(self)
        row.update(clip_id=self.clip_id)
        return {name: row[name] for name in SCHEMA.names}

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> ClipRecord:
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in row.items() if k in names}
        for k in ("camera_motion", "quality_flags"):
            kw[k] = list(kw.get(k) or [])
        kw["retimed"] = kw.get("retimed") or ""  # a part written before the column
        if kw.get("caption") is not None:
            kw["caption"] = {
                k: (list(v) if isinstance(v, (list, tuple)) or hasattr(v, "tolist") else v)
                for k, v in dict(kw["caption"]).items()
            }
        rec = cls(**kw)
        if "clip_id" in row and row["clip_id"] != rec.clip_id:
            raise ValueError(f"row clip_id {row['clip_id']!r} disagrees with its span ({rec.clip_id})")
        return rec

    def error_copy(self, reason: str) -> ClipRecord:
        """This record turned into an error row, keeping where it came from."""
        return dataclasses.replace(self, status="error", error=reason)

    @property
    def whole_video(self) -> bool:
        """An error row that stands for the whole video (it has no frame span)."""
        return self.n_frames == 0


def clip_id(video_id: str, start_frame: int, end_frame: int) -> str:
    return f"{video_id}_{start_frame:06d}_{end_frame:06d}"


_tags = pa.list_(pa.string())
CAPTION_TYPE = pa.struct(
    [
        ("narrative", pa.string()),
        ("style", _tags),
        ("motion", _tags),
        ("camera", _tags),
        ("vfx", _tags),
        ("shot", pa.string()),
    ]
)

_FIELDS: list[tuple[str, pa.DataType]] = [  # typed: mypy joins the DataType subclasses to object
    ("clip_id", pa.string()),
    ("video_id", pa.string()),
    ("source_path", pa.string()),
    ("start_frame", pa.int64()),
    ("end_frame", pa.int64()),
    ("fps", pa.float64()),
    ("start_s", pa.float64()),
    ("end_s", pa.float64()),
    ("clip_frames", pa.int64()),
    ("retimed", pa.string()),
    ("width", pa.int32()),
    ("height", pa.int32()),
    ("transition_in", pa.string()),
    ("cadence", pa.float64()),
    ("held_ratio", pa.float64()),
    ("camera_motion", _tags),
    ("motion_score", pa.float64()),
    ("deformation_score", pa.float64()),
    ("smear_frames", pa.int32()),
    ("impact_frames", pa.int32()),
    ("quality_flags", _tags),
    ("curriculum_stage", pa.int8()),
    ("judge_score", pa.float64()),
    ("phash", pa.string()),
    ("duplicate_of", pa.string()),
    ("signals", pa.string()),
    ("caption", CAPTION_TYPE),
    ("caption_source", pa.string()),
    ("status", pa.string()),
    ("error", pa.string()),
]
SCHEMA = pa.schema(_FIELDS)


def to_table(records: Iterable[ClipRecord | dict]) -> pa.Table:
    rows = [r.to_row() if isinstance(r, ClipRecord) else ClipRecord.from_row(r).to_row() for r in records]
    return pa.Table.from_pylist(rows, schema=SCHEMA)


def write_parquet(records: Iterable[ClipRecord | dict], path: str | Path) -> None:
    pq.write_table(to_table(records), str(path))


def read_parquet(path: str | Path) -> list[ClipRecord]:
    return [ClipRecord.from_row(r) for r in pq.read_table(str(path), schema=SCHEMA).to_pylist()]
