"""PKS: the Production Knowledge System data pipeline for anime video generation."""

from pks.record import SCHEMA, ClipRecord

__version__ = "0.1.0"
__all__ = ["SCHEMA", "ClipRecord", "__version__"]
