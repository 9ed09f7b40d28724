"""Typed configuration: a YAML mapping becomes frozen dataclasses (one per section), built and
checked once; what the code passes down is an object whose fields say what it reads.

Both configurations use it: the job config (pks/config.py) and the training config
(training/config.py). A section is a frozen dataclass; its fields' annotations are the types a
value must have (an int passes for a float, a bool never passes for a number), `X | None` allows
null, `tuple[int, int]` is a YAML list of two (kept as a tuple; written back as a list), a dataclass field is a nested section, `dict[str, Any]` is a free-form mapping whose keys
the component it configures checks. Ranges are each section's `__post_init__` (so an object
built in code is checked too); `need` words those messages alike.

`with_overrides` is the one dotted-override helper: `{"split.detector": "anime"}` sets one value,
a key the schema lacks is named with its nearest neighbour.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

import yaml

from pks.errors import ConfigError, UserError

T = TypeVar("T")


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    """(the type inside `X | None`, whether None is allowed)."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


def _is_section(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _is_open(tp: Any) -> bool:
    return tp is dict or typing.get_origin(tp) is dict


def _type_name(tp: Any) -> str:
    if _is_section(tp) or _is_open(tp):
        return "dict"
    origin = typing.get_origin(tp)
    if origin is tuple:
        return f"a list of {len(typing.get_args(tp))} {_type_name(typing.get_args(tp)[0])}"
    return (origin or tp).__name__


def _type_ok(value: Any, tp: Any) -> bool:
    origin = typing.get_origin(tp) or tp
    if tp is Any:
        return True
    if origin is tuple:  # a fixed-length YAML list: [height, width]
        items = typing.get_args(tp)
        return (
            isinstance(value, (list, tuple))
            and len(value) == len(items)
            and all(_type_ok(v, t) for v, t in zip(value, items))
        )
    if origin is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if origin is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, origin)


def unknown_key(label: str, keys: list[str], depth: int, known: list[str], *, list_known: bool) -> ConfigError:
    """`unknown config key a.bx (did you mean a.b?)`: the nearest known key at the level of the typo
    (with the rest of the dotted key kept), or the known keys when none is near."""
    near = difflib.get_close_matches(keys[depth], known, n=1)
    if near:
        hint = f" (did you mean {'.'.join([*keys[:depth], near[0], *keys[depth + 1 :]])}?)"
    else:
        hint = f"; known: {', '.join(sorted(known))}" if list_known else ""
    return ConfigError(f"unknown {label} key {'.'.join(keys)}{hint}")


def with_overrides(data: Mapping[str, Any], overrides: Mapping[str, Any] | None, schema: type, label: str) -> dict:
    """A copy of `data` with dotted overrides set (`{"train.steps": 5}`); a None value means "not
    given" and changes nothing. Every key is checked against the `schema` dataclass first (a
    free-form mapping takes any key below it); a missing parent mapping is created."""
    import copy

    out = copy.deepcopy(dict(data))
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        keys = dotted.split(".")
        tp: Any = schema
        for depth, k in enumerate(keys):
            if tp is None or _is_open(tp):  # below a free-form mapping: any key
                tp = None
                continue
            if not _is_section(tp) or k not in _hints(tp):
                known = list(_hints(tp)) if _is_section(tp) else []
                raise unknown_key(label, keys, depth, known, list_known=False)
            tp = _unwrap_optional(_hints(tp)[k])[0]
        node = out
        for k in keys[:-1]:
            if not isinstance(node.get(k), dict):
                node[k] = {}
            node = node[k]
        node[keys[-1]] = value
    return out


def build(cls: type[T], data: Mapping[str, Any] | None, label: str, prefix: str = "") -> T:
    """The `cls` section from a mapping: every key known (else the nearest is named), every value
    of its field's type; a field the mapping lacks takes its default (none: an error)."""
    data = data or {}
    hints = _hints(typing.cast(type, cls))
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for k, v in data.items():
        key = f"{prefix}{k}"
        if k not in hints:
            raise unknown_key(label, key.split("."), key.count("."), names, list_known=True)
        tp, nullable = _unwrap_optional(hints[k])
        if v is None and nullable:
            kwargs[k] = None
            continue
        if _is_section(tp):
            if not isinstance(v, dict):
                raise ConfigError(f"{label} {key} must be dict, got {v!r}")
            kwargs[k] = build(tp, v, label, key + ".")
            continue
        if not _type_ok(v, tp):
            raise ConfigError(f"{label} {key} must be {_type_name(tp)}, got {v!r}")
        kwargs[k] = tuple(v) if typing.get_origin(tp) is tuple else v
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name in kwargs:
            continue
        tp = _unwrap_optional(hints[f.name])[0]
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            if not _is_section(tp):
                raise ConfigError(f"{label} {prefix}{f.name} is missing")
            kwargs[f.name] = build(tp, {}, label, f"{prefix}{f.name}.")  # a section given nothing: its defaults
    return cls(**kwargs)


def to_dict(cfg: Any) -> Any:
    """A section as plain YAML-able values (the form a run's config.yaml keeps): nested sections
    as mappings, in field order; a section may leave fields out with a `to_dict` method."""
    if hasattr(cfg, "to_dict") and dataclasses.is_dataclass(cfg):
        return cfg.to_dict()  # type: ignore[union-attr]
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, (list, tuple)):
        return [to_dict(v) for v in cfg]
    if isinstance(cfg, dict):
        return {k: to_dict(v) for k, v in cfg.items()}
    return cfg


def need(ok: bool, label: str, key: str, what: str, value: Any) -> None:
    """A range check's one line: `config shard.val_fraction must be in [0, 1), got 1.5`."""
    if not ok:
        raise ConfigError(f"{label} {key} {what}, got {value!r}")


def parse_sets(sets) -> dict:
    """["latent.steps=300", ...] -> {"latent.steps": 300, ...}: values read as YAML (numbers, lists,
    null), so a value means what it would in the config file."""
    out = {}
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set takes KEY=VALUE (a dotted config key), got {item!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out
