"""The PKS vocabulary: four tag axes (style, motion, camera, vfx) plus shot size, versioned."""

from taxonomy.captions import read_captions
from taxonomy.loader import (
    CAPTION_FIELDS,
    SHOT_AXIS,
    TAG_AXES,
    Axis,
    CaptionError,
    Tag,
    Taxonomy,
    TaxonomyError,
    available_versions,
    load,
    migrate,
)

__all__ = [
    "CAPTION_FIELDS",
    "SHOT_AXIS",
    "TAG_AXES",
    "Axis",
    "CaptionError",
    "Tag",
    "Taxonomy",
    "TaxonomyError",
    "available_versions",
    "load",
    "migrate",
    "read_captions",
]
