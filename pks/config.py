"""Job configuration: a YAML file of parameters, with CLI flags layered on top."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "pipelines" / "configs" / "curate.yaml"


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        elif v is not None:
            out[k] = v
    return out


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> dict:
    """The default job config, updated by `path` (a YAML file) and then by `overrides`.

    Overrides use dotted keys for nested values ({"split.detector": "anime"}); None values
    mean "not given" and leave the config alone.
    """
    with open(DEFAULT_CONFIG) as f:
        cfg = yaml.safe_load(f)
    if path is not None:
        p = Path(path)
        if not p.exists():
            raise FileNotFoundError(f"config file not found: {p}")
        with open(p) as f:
            user = yaml.safe_load(f) or {}
        if not isinstance(user, dict):
            raise ValueError(f"config {p} must be a YAML mapping")
        unknown = sorted(set(user) - set(cfg))
        if unknown:
            raise ValueError(f"config {p}: unknown section(s) {unknown}; known: {sorted(cfg)}")
        cfg = _merge(cfg, user)
    for dotted, v in (overrides or {}).items():
        if v is None:
            continue
        node = cfg
        *parents, leaf = dotted.split(".")
        for k in parents:
            node = node.setdefault(k, {})
        node[leaf] = v
    return cfg
