"""Typed configuration (pks/typedconfig.py): sections built and checked once from YAML, the one
dotted-override helper, and a run's config.yaml that keeps its YAML form."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from pks.errors import ConfigError, UserError
from pks.typedconfig import build, parse_sets, to_dict, with_overrides
from training.config import CONFIG_DIR, TrainConfig, from_dict, load_run_config, load_train_config, write_run_config


@dataclasses.dataclass(frozen=True, kw_only=True)
class Inner:
    rate: float
    size: tuple[int, int] = (1, 2)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Outer:
    name: str
    limit: int | None = None
    free: dict = dataclasses.field(default_factory=dict)
    inner: Inner


def test_build_checks_keys_and_types_and_keeps_values_as_given():
    got = build(Outer, {"name": "a", "inner": {"rate": 2, "size": [3, 4]}, "free": {"x": 1}}, "config")
    assert got == Outer(name="a", inner=Inner(rate=2, size=(3, 4)), free={"x": 1})
    assert type(got.inner.rate) is int  # an int passes for a float and stays the int the YAML said
    for data, message in (
        ({"name": "a", "inner": {"rat": 1}}, "unknown config key inner.rat (did you mean inner.rate?)"),
        ({"name": "a", "inner": {"rate": 1}, "zzz": 1}, "unknown config key zzz; known: free, inner, limit, name"),
        ({"name": "a", "inner": {"rate": True}}, "config inner.rate must be float, got True"),
        ({"name": "a", "inner": {"rate": 1, "size": [1]}}, "config inner.size must be a list of 2 int, got [1]"),
        ({"name": "a", "limit": 1.5, "inner": {"rate": 1}}, "config limit must be int, got 1.5"),
        ({"inner": {"rate": 1}}, "config name is missing"),
    ):
        with pytest.raises(ConfigError) as e:
            build(Outer, data, "config")
        assert str(e.value) == message


def test_one_override_helper_names_a_typo_at_any_depth():
    data = {"name": "a", "inner": {"rate": 1}}
    got = with_overrides(data, {"inner.rate": 3, "free.new.deep": 1, "limit": None}, Outer, "job config")
    assert got == {"name": "a", "inner": {"rate": 3}, "free": {"new": {"deep": 1}}}
    assert data == {"name": "a", "inner": {"rate": 1}}  # a copy: the caller's mapping is untouched
    with pytest.raises(ConfigError, match=r"unknown job config key iner.rate \(did you mean inner.rate\?\)"):
        with_overrides(data, {"iner.rate": 3}, Outer, "job config")
    with pytest.raises(ConfigError, match=r"unknown job config key name.x$"):  # below a leaf
        with_overrides(data, {"name.x": 3}, Outer, "job config")
    assert parse_sets(["a.b=[1, 2]", "c=null"]) == {"a.b": [1, 2], "c": None}
    with pytest.raises(UserError, match="--set takes KEY=VALUE"):
        parse_sets(["a.b"])


def test_training_configs_are_typed_and_a_run_config_round_trips(tmp_path):
    for name in ("tiny", "tiny_pixel", "small", "base"):
        cfg = load_train_config(name)
        raw = yaml.safe_load((CONFIG_DIR / f"{name}.yaml").read_text())
        assert to_dict(cfg.latent) == raw["latent"]  # what latent shards fingerprint
        assert cfg.data.size == tuple(raw["data"]["size"])
        write_run_config(cfg, tmp_path)
        assert load_run_config(tmp_path) == cfg
        written = yaml.safe_load((tmp_path / "config.yaml").read_text())
        assert written["data"]["size"] == raw["data"]["size"] and written["model"] == raw["model"]  # plain YAML
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.train.steps = 3  # type: ignore[misc]


def test_a_training_config_file_with_a_typo_or_a_bad_value_fails_before_training(tmp_path):
    raw = yaml.safe_load((CONFIG_DIR / "tiny.yaml").read_text())
    for change, message in (
        (("train", "stepz", 3), "unknown training config key train.stepz (did you mean train.steps?)"),
        (("data", "batch_size", 0), "training config needs data.batch_size >= 1 and train.steps >= 1"),
        (("data", "fps", "fast"), "training config data.fps must be float, got 'fast'"),
        (("latent", "kind", "vq"), "training config latent.kind must be pixel, learned or wan, got 'vq'"),
        (("dpo", "pairs", "all"), "dpo.pairs must be one of offline, online, mixed, got 'all'"),
    ):
        section, key, value = change
        bad = yaml.safe_load(yaml.safe_dump(raw))
        bad[section][key] = value
        (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
        with pytest.raises(UserError) as e:
            load_train_config(tmp_path / "bad.yaml")
        assert str(e.value) == message


def test_a_run_config_from_before_the_optional_keys_loads_with_their_old_defaults():
    raw = yaml.safe_load((CONFIG_DIR / "tiny_pixel.yaml").read_text())
    for section, key in (("data", "cache_mb"), ("train", "loss_weight"), ("dpo", "sft_weight")):
        del raw[section][key]
    del raw["tag_channel"], raw["arch"], raw["dpo"]
    cfg = from_dict(raw)
    assert isinstance(cfg, TrainConfig)
    assert (cfg.data.cache_mb, cfg.train.loss_weight, cfg.tag_channel, cfg.dpo, cfg.taxonomy_version) == (
        0,
        "velocity",
        True,
        None,
        None,
    )


def test_the_job_config_is_built_once_into_typed_sections():
    from pks.config import DEFAULT_CONFIG, load_config, replace_config
    from pks.jobconfig import JobConfig, ShardConfig

    cfg = load_config(None, {"shard.max_samples": 3, "split.params": {"bright_luma": 90.0}})
    assert isinstance(cfg, JobConfig) and isinstance(cfg.shard, ShardConfig) and cfg.shard.max_samples == 3
    assert to_dict(load_config()) == yaml.safe_load(DEFAULT_CONFIG.read_text())  # the YAML holds the defaults
    assert replace_config(cfg, {"shard.enabled": False}).shard.enabled is False and cfg.shard.enabled is True
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.shard.seed = 1  # type: ignore[misc]
    for overrides, message in (
        ({"shard.max_samplez": 3}, "unknown config key shard.max_samplez (did you mean shard.max_samples?)"),
        ({"clips.crf": "high"}, "config clips.crf must be int, got 'high'"),
        ({"shard.val_fraction": 1.5}, "config shard.val_fraction must be in [0, 1), got 1.5"),
        ({"split.params": {"bright_lumaa": 1}}, "unexpected keyword argument 'bright_lumaa'"),
    ):
        with pytest.raises(ConfigError) as e:
            load_config(None, overrides)
        assert message in str(e.value)


def test_a_job_config_file_with_an_unknown_section_lists_the_known_ones(tmp_path):
    from pks.config import load_config

    (tmp_path / "job.yaml").write_text("zzz: {a: 1}\n")
    with pytest.raises(ConfigError) as e:
        load_config(tmp_path / "job.yaml")
    assert (
        str(e.value) == "unknown config key zzz; known: analyse, caption, clips, curriculum, ingest, ray, shard, split"
    )
