"""Load the versioned PKS taxonomy, validate captions against it, migrate between versions."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

VERSIONS_DIR = Path(__file__).parent / "versions"
TAG_AXES = ("style", "motion", "camera", "vfx")  # multi-valued axes of the method
SHOT_AXIS = "shot"  # single-valued shot size
CAPTION_FIELDS = ("narrative",) + TAG_AXES + (SHOT_AXIS,)
_ID = re.compile(r"^[a-z][a-z0-9_]*$")


class TaxonomyError(ValueError):
    """The taxonomy data itself is malformed."""


class CaptionError(ValueError):
    """A caption does not fit the taxonomy. `axis` and `tag` name the offending value."""

    def __init__(self, message: str, axis: str | None = None, tag: Any = None):
        super().__init__(message)
        self.axis, self.tag = axis, tag


@dataclass(frozen=True)
class Tag:
    id: str
    axis: str
    label: str
    definition: str
    measurable: bool = False


@dataclass(frozen=True)
class Axis:
    name: str
    description: str
    multi: bool
    tags: tuple[Tag, ...]
    max_tags: int | None = None

    @property
    def ids(self) -> list[str]:
        return [t.id for t in self.tags]


@dataclass(frozen=True)
class Taxonomy:
    version: int
    axes: dict[str, Axis]
    # {old_version: {axis: {old_id: new_id | None}}}; None means the tag was retired.
    migrations: dict[int, dict[str, dict[str, str | None]]] = field(default_factory=dict)

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict) -> Taxonomy:
        try:
            version = int(data["version"])
            raw_axes = data["axes"]
        except (KeyError, TypeError, ValueError) as e:
            raise TaxonomyError(f"taxonomy needs an integer 'version' and 'axes': {e}") from None
        missing = [a for a in TAG_AXES + (SHOT_AXIS,) if a not in raw_axes]
        if missing:
            raise TaxonomyError(f"taxonomy v{version} lacks axes {missing}")
        axes: dict[str, Axis] = {}
        for name, spec in raw_axes.items():
            tags = []
            for t in spec.get("tags") or []:
                if not _ID.match(str(t.get("id", ""))):
                    raise TaxonomyError(f"axis {name!r}: bad tag id {t.get('id')!r} (want snake_case)")
                if not t.get("definition"):
                    raise TaxonomyError(f"axis {name!r}: tag {t['id']!r} has no definition")
                tags.append(
                    Tag(
                        id=t["id"],
                        axis=name,
                        label=t.get("label", t["id"]),
                        definition=t["definition"],
                        measurable=bool(t.get("measurable", False)),
                    )
                )
            ids = [t.id for t in tags]
            dupes = sorted({i for i in ids if ids.count(i) > 1})
            if dupes:
                raise TaxonomyError(f"axis {name!r}: duplicate tag ids {dupes}")
            axes[name] = Axis(
                name=name,
                description=spec.get("description", ""),
                multi=bool(spec.get("multi", True)),
                tags=tuple(tags),
                max_tags=spec.get("max_tags"),
            )
        migrations = {int(k): v or {} for k, v in (data.get("migrations") or {}).items()}
        return cls(version=version, axes=axes, migrations=migrations)

    @classmethod
    def from_file(cls, path: str | Path) -> Taxonomy:
        with open(path) as f:
            return cls.from_dict(yaml.safe_load(f))

    # ---- lookups ------------------------------------------------------------------------
    def tag(self, axis: str, tag_id: str) -> Tag:
        for t in self.axes[axis].tags:
            if t.id == tag_id:
                return t
        raise CaptionError(f"unknown tag {tag_id!r} on axis {axis!r} (taxonomy v{self.version})", axis, tag_id)

    def index(self, axis: str, tag_id: str) -> int:
        """Position of a tag in its axis: the embedding row the generator's tag encoder uses."""
        ids = self.axes[axis].ids
        if tag_id not in ids:
            raise CaptionError(f"unknown tag {tag_id!r} on axis {axis!r} (taxonomy v{self.version})", axis, tag_id)
        return ids.index(tag_id)

    def measurable(self, axis: str) -> list[str]:
        return [t.id for t in self.axes[axis].tags if t.measurable]

    # ---- validation ---------------------------------------------------------------------
    def validate(self, caption: Any) -> dict:
        """Return the caption in canonical form or raise CaptionError naming the bad field/tag."""
        if not isinstance(caption, dict):
            raise CaptionError(f"caption must be a JSON object, got {type(caption).__name__}")
        extra = sorted(set(caption) - set(CAPTION_FIELDS))
        if extra:
            raise CaptionError(f"unknown caption field(s) {extra}; expected {list(CAPTION_FIELDS)}", extra[0])
        narrative = caption.get("narrative", "")
        if not isinstance(narrative, str):
            raise CaptionError("narrative must be a string", "narrative")
        out: dict[str, Any] = {"narrative": narrative}
        for axis in TAG_AXES:
            values = caption.get(axis, [])
            if not isinstance(values, list):
                raise CaptionError(f"axis {axis!r} must be a list of tag ids, got {values!r}", axis, values)
            seen: list[str] = []
            for v in values:
                if not isinstance(v, str):
                    raise CaptionError(f"axis {axis!r}: tag ids are strings, got {v!r}", axis, v)
                self.tag(axis, v)
                if v in seen:
                    raise CaptionError(f"axis {axis!r}: tag {v!r} repeated", axis, v)
                seen.append(v)
            limit = self.axes[axis].max_tags
            if limit and len(seen) > limit:
                raise CaptionError(f"axis {axis!r}: {len(seen)} tags, at most {limit}", axis, seen)
            out[axis] = seen
        shot = caption.get(SHOT_AXIS)
        if not isinstance(shot, str):
            raise CaptionError(f"axis 'shot' needs one tag id, got {shot!r}", SHOT_AXIS, shot)
        self.tag(SHOT_AXIS, shot)
        out[SHOT_AXIS] = shot
        return out

    # ---- JSON Schema --------------------------------------------------------------------
    def json_schema(self) -> dict:
        """Closed-vocabulary JSON Schema for constrained decoding.

        The narrative is a plain string on purpose: a `maxLength` makes xgrammar compile a
        grammar that lets raw control characters through, so bounded length is left to
        max_tokens instead. Tag lists carry no `uniqueItems`: xgrammar (vLLM's structured
        output backend) refuses the keyword; `validate` rejects repeats instead.
        """
        props: dict[str, Any] = {"narrative": {"type": "string", "description": "What happens in the clip."}}
        for axis in TAG_AXES:
            ax = self.axes[axis]
            prop: dict[str, Any] = {
                "type": "array",
                "items": {"type": "string", "enum": ax.ids},
                "description": ax.description,
            }
            if ax.max_tags:
                prop["maxItems"] = ax.max_tags
            props[axis] = prop
        props[SHOT_AXIS] = {
            "type": "string",
            "enum": self.axes[SHOT_AXIS].ids,
            "description": self.axes[SHOT_AXIS].description,
        }
        return {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"https://pks.dev/schemas/caption-v{self.version}.json",
            "title": f"PKS caption (taxonomy v{self.version})",
            "type": "object",
            "properties": props,
            "required": list(CAPTION_FIELDS),
            "additionalProperties": False,
        }


# ---- versions and migration ------------------------------------------------------------
def available_versions(directory: str | Path = VERSIONS_DIR) -> list[int]:
    return sorted(int(p.stem[1:]) for p in Path(directory).glob("v*.yaml") if p.stem[1:].isdigit())


@cache
def _load_cached(version: int, directory: str) -> Taxonomy:
    path = Path(directory) / f"v{version}.yaml"
    if not path.exists():
        raise TaxonomyError(f"no taxonomy v{version} in {directory} (have {available_versions(directory)})")
    tax = Taxonomy.from_file(path)
    if tax.version != version:
        raise TaxonomyError(f"{path} declares version {tax.version}")
    return tax


def load(version: int | None = None, directory: str | Path = VERSIONS_DIR) -> Taxonomy:
    """The taxonomy of `version` (default: the newest shipped)."""
    versions = available_versions(directory)
    if not versions:
        raise TaxonomyError(f"no taxonomy versions in {directory}")
    return _load_cached(versions[-1] if version is None else int(version), str(directory))


def migrate(
    caption: dict, from_version: int, to_version: int | None = None, directory: str | Path = VERSIONS_DIR
) -> dict:
    """Carry a caption written against `from_version` forward, one version bump at a time.

    Each version's `migrations[previous]` maps old ids to new ones (None: retired, dropped);
    ids it does not mention must still exist. The result is validated against the target.
    """
    target = load(to_version, directory)
    if from_version > target.version:
        raise TaxonomyError(f"cannot migrate backwards from v{from_version} to v{target.version}")
    cap = dict(caption)
    for v in range(from_version + 1, target.version + 1):
        step = load(v, directory).migrations.get(v - 1, {})
        for axis in TAG_AXES + (SHOT_AXIS,):
            mapping = step.get(axis, {})
            if axis == SHOT_AXIS:
                if cap.get(axis) in mapping:
                    if mapping[cap[axis]] is None:  # one value is required: a human must choose
                        raise CaptionError(f"shot size {cap[axis]!r} was retired in v{v}; re-annotate", axis, cap[axis])
                    cap[axis] = mapping[cap[axis]]
                continue
            new: list[str] = []
            for t in cap.get(axis, []):
                m = mapping.get(t, t)
                for nt in m if isinstance(m, list) else [m]:
                    if nt is not None and nt not in new:
                        new.append(nt)
            cap[axis] = new
    return target.validate(cap)
