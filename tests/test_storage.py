"""Object storage: `pks curate` from and to a real S3-protocol server on loopback (moto), HTTP
input from a local http.server, resume after kill -9 on S3, and the store's user errors."""

import functools
import http.server
import io
import json
import os
import socket
import subprocess
import sys
import tarfile
import threading

import pyarrow.parquet as pq
import pytest

from pks.probe import content_hash
from support.procs import kill_9_when

s3fs = pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.server")

CONFIG = "shard:\n  max_samples: 3\n  val_fraction: 0.3\n"  # what the sharded_run fixture uses


@pytest.fixture(scope="module")
def s3():
    """A moto S3 server on a free loopback port; the environment a CLI run (and its Ray
    workers, which inherit it) needs to reach it; a filesystem for the test to look with."""
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {
        **os.environ,
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
        "AWS_ACCESS_KEY_ID": "pks-test",
        "AWS_SECRET_ACCESS_KEY": "pks-test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    fs = s3fs.S3FileSystem(
        endpoint_url=env["AWS_ENDPOINT_URL"],
        key="pks-test",
        secret="pks-test",
        use_listings_cache=False,
        skip_instance_cache=True,
    )
    yield env, fs
    server.stop()


@pytest.fixture(scope="module")
def footage(s3, synth_videos):
    """The three synthetic videos uploaded to s3://in-bucket/footage/."""
    _, fs = s3
    fs.mkdir("in-bucket")
    for p, _ in synth_videos:
        fs.put_file(str(p), f"in-bucket/footage/{p.name}")
    return "s3://in-bucket/footage"


def pks(env, *args, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "pks.cli", *args], capture_output=True, text=True, env=env, timeout=timeout
    )


def comparable(rows):
    """Records with source_path cut to the file name: the one field that must differ between a
    local run (a path) and an S3 run (the s3:// URL it read)."""
    return [{**r, "source_path": os.path.basename(r["source_path"])} for r in rows]


def samples(tars):
    """{key: {ext: bytes}} over shards given as {name: read()}, records cut as in `comparable`."""
    got = {}
    for read in tars.values():
        with tarfile.open(fileobj=io.BytesIO(read())) as t:
            for m in t.getmembers():
                key, ext = m.name.split(".", 1)
                data = t.extractfile(m).read()
                got.setdefault(key, {})[ext] = (
                    json.dumps(comparable([json.loads(data)])[0], sort_keys=True) if ext == "json" else data
                )
    return got


def test_s3_round_trip_gives_the_local_runs_records_clips_and_shards(s3, footage, sharded_run, tmp_path):
    env, fs = s3
    config = tmp_path / "job.yaml"
    config.write_text(CONFIG)
    fs.mkdir("out-bucket")
    r = pks(env, "curate", footage, "s3://out-bucket/run", "--config", str(config), "--num-cpus", "2")
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads(r.stdout)
    assert summary["processed"] == 3 and summary["manifest"] == "s3://out-bucket/run/manifest.parquet"
    local = pq.read_table(sharded_run / "manifest.parquet").to_pylist()
    with fs.open("out-bucket/run/manifest.parquet") as f:
        remote = pq.read_table(f).to_pylist()
    assert {x["source_path"] for x in remote} == {f"{footage}/{os.path.basename(x['source_path'])}" for x in local}
    # The clips: the same files; byte for byte, but for the encoder's run-to-run variation.
    clips = sorted(p.name for p in (sharded_run / "clips").iterdir())
    assert sorted(os.path.basename(k) for k in fs.ls("out-bucket/run/clips")) == clips
    same = {
        name[:-4]
        for name in clips
        if fs.cat_file(f"out-bucket/run/clips/{name}") == (sharded_run / "clips" / name).read_bytes()
    }
    # The records, in the same order, byte for byte (source_path aside): analysis reads the
    # decoded source, not the clip file, whose bytes libx264 does not always repeat run to run.
    assert [x["clip_id"] for x in remote] == [x["clip_id"] for x in local]
    for x, y in zip(comparable(remote), comparable(local)):
        assert json.dumps(x, default=str) == json.dumps(y, default=str)
    # The shards: every sample in the same split; clip, record and thumbnail equal where the clip is.
    tars = {str(p.relative_to(sharded_run / "shards")): p.read_bytes for p in (sharded_run / "shards").rglob("*.tar")}
    want = samples(tars)
    got = samples(
        {k: functools.partial(fs.cat_file, k) for k in fs.find("out-bucket/run/shards") if k.endswith(".tar")}
    )
    assert got.keys() == want.keys() and len(got) == sum(x["status"] == "ok" for x in local)
    for key in got:  # the record always; the clip and its thumbnail where the clip's bytes are the same
        assert got[key]["json"] == want[key]["json"], key
        if key in same:
            assert got[key] == want[key], key
    with fs.open("out-bucket/run/shards/index.parquet") as f:
        index = {x["clip_id"]: x for x in pq.read_table(f).to_pylist()}
    local_index = {x["clip_id"]: x for x in pq.read_table(sharded_run / "shards" / "index.parquet").to_pylist()}
    assert index.keys() == local_index.keys()
    for k, x in index.items():
        cols = ("video_id", "split", "stage") + (("clip_bytes", "clip_hash") if k in same else ())
        assert {c: x[c] for c in cols} == {c: local_index[k][c] for c in cols}
    if len(same) == len(clips):  # then the plan is the same too: the same shards, byte for byte in content
        assert sorted(
            k.split("/shards/", 1)[1] for k in fs.find("out-bucket/run/shards") if k.endswith(".tar")
        ) == sorted(tars)
    # The inputs' keys (size and ETag -> content hash) are kept on S3 for the rerun.
    keys = [json.loads(line) for line in fs.cat_file("out-bucket/run/input_keys.jsonl").decode().splitlines()]
    assert sorted(e["video_id"] for e in keys) == sorted({x["video_id"] for x in local})
    assert all(e["version"] and e["size"] for e in keys)
    # A rerun: nothing to process, no shard to write, no new object.
    before = {k: v["ETag"] for k, v in fs.find("out-bucket/run", detail=True).items()}
    r = pks(env, "curate", footage, "s3://out-bucket/run", "--config", str(config), "--num-cpus", "2")
    assert r.returncode == 0, r.stderr[-3000:]
    again = json.loads(r.stdout)
    assert again["processed"] == 0 and again["shards"]["kept"] == again["shards"]["shards"]
    after = {k: v["ETag"] for k, v in fs.find("out-bucket/run", detail=True).items()}
    assert after.keys() == before.keys()
    assert {k: v for k, v in after.items() if "/clips/" in k or k.endswith(".tar")} == {
        k: v for k, v in before.items() if "/clips/" in k or k.endswith(".tar")
    }
    # pks shard alone, with the endpoint and keys in --storage-options instead of the environment.
    bare = {k: v for k, v in env.items() if not k.startswith("AWS_")}
    options = {"endpoint_url": env["AWS_ENDPOINT_URL"], "key": "pks-test", "secret": "pks-test"}
    r = pks(
        bare,
        "shard",
        "s3://out-bucket/run",
        "--config",
        str(config),
        "--num-cpus",
        "1",
        "--storage-options",
        json.dumps(options),
    )
    assert r.returncode == 0, r.stderr[-3000:]
    shards = json.loads(r.stdout)
    assert shards["kept"] == shards["shards"] == again["shards"]["shards"] and shards["removed"] == 0


def test_kill_9_on_s3_then_rerun_resumes_without_duplicates(s3, footage, tmp_path):
    env, fs = s3
    fs.mkdir("resume-bucket")
    cmd = [
        sys.executable,
        "-m",
        "pks.cli",
        "curate",
        footage,
        "s3://resume-bucket/run",
        "--num-cpus",
        "1",
        "--no-shard",
    ]
    kill_9_when(cmd, lambda: bool(fs.find("resume-bucket/run/parts")), timeout=180, poll=0.2, env=env)
    finished = len(fs.ls("resume-bucket/run/parts"))
    assert 1 <= finished < 3, "the kill should land mid-run"
    r = pks(env, *cmd[3:])
    assert r.returncode == 0, r.stderr[-3000:]
    # (a PUT the server had received whole before the kill may still land: one fewer to do)
    assert 1 <= json.loads(r.stdout)["processed"] <= 3 - finished
    with fs.open("resume-bucket/run/manifest.parquet") as f:
        rows = pq.read_table(f).to_pylist()
    assert len({x["source_path"] for x in rows}) == 3 and len({x["clip_id"] for x in rows}) == len(rows)
    ok = {x["clip_id"] for x in rows if x["status"] == "ok"}
    assert ok and {os.path.basename(k)[:-4] for k in fs.ls("resume-bucket/run/clips")} == ok  # no orphan, none missing


@pytest.fixture
def http_root(synth_videos):
    """A local http.server serving the synthetic videos' folder."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(synth_videos[0][0].parent))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_http_input(http_root, synth_videos, tmp_path):
    video, truth = synth_videos[1]
    url = f"{http_root}/{video.name}"
    out = tmp_path / "out"
    r = pks(os.environ, "curate", url, str(out), "--no-shard", "--num-cpus", "1")
    assert r.returncode == 0, r.stderr[-3000:]
    rows = pq.read_table(out / "manifest.parquet").to_pylist()
    ok = [x for x in rows if x["status"] == "ok"]
    assert len(ok) >= len(truth["shots"]) - 1 and all(x["source_path"] == url for x in rows)
    assert {x["video_id"] for x in rows} == {content_hash(video)}
    assert all((out / "clips" / f"{x['clip_id']}.mp4").stat().st_size > 0 for x in ok)
    (key,) = [json.loads(line) for line in (out / "input_keys.jsonl").read_text().splitlines()]
    assert key["path"] == url and key["size"] == video.stat().st_size and key["version"]  # Last-Modified
    r = pks(os.environ, "curate", url, str(out), "--no-shard", "--num-cpus", "1")
    assert r.returncode == 0 and json.loads(r.stdout)["processed"] == 0, r.stderr[-3000:]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    "case",
    [
        "missing bucket",
        "bad credentials",
        "unreachable",
        "unknown protocol",
        "missing client",
        "input bucket",
        "report",
    ],
)
def test_store_mistakes_are_one_line_exit_2(case, s3, synth_videos, tmp_path):
    import requests

    env, fs = s3
    env = {**env, "AWS_MAX_ATTEMPTS": "1"}  # fail fast on the unreachable endpoint
    inputs = str(synth_videos[0][0].parent)
    args, message = {
        "missing bucket": (("curate", inputs, "s3://no-such-bucket/run"), "no such bucket"),
        "bad credentials": (("curate", inputs, "s3://in-bucket/run"), "access denied"),
        "unreachable": (("curate", inputs, "s3://in-bucket/run"), "cannot reach the store"),
        "unknown protocol": (("curate", inputs, "nosuch://bucket/run"), "unknown storage protocol"),
        "missing client": (("curate", inputs, "gs://bucket/run"), "pip install"),
        "input bucket": (("curate", "s3://no-such-bucket/footage", str(tmp_path / "out")), "no such bucket"),
        "report": (("report", "s3://in-bucket/run"), "needs a local OUT folder"),
    }[case]
    if case == "missing client" and __import__("importlib").util.find_spec("gcsfs"):
        pytest.skip("gcsfs is installed here")
    if case == "unreachable":
        env["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{free_port()}"
    if case == "bad credentials":  # moto checks keys from now on; pks-test is none it knows
        requests.post(f"{env['AWS_ENDPOINT_URL']}/moto-api/reset-auth", data=b"0").raise_for_status()
    try:
        r = pks(env, *args, timeout=120)
    finally:
        if case == "bad credentials":
            requests.post(f"{env['AWS_ENDPOINT_URL']}/moto-api/reset-auth", data=b"inf").raise_for_status()
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert len(r.stderr.strip().splitlines()) == 1 and message in r.stderr, r.stderr
    assert not (tmp_path / "out").exists()


def test_only_storage_failures_become_one_line_user_errors():
    """A store that cannot be used is the user's to fix (exit 2, one line); a bug inside the
    block keeps its type and traceback."""
    import botocore.exceptions

    from pks.errors import UserError
    from pks.store import storage_errors

    for e in (
        ConnectionRefusedError(111, "refused"),
        FileNotFoundError("no-such-bucket"),
        TimeoutError("slow"),
        ImportError("no s3fs"),
        botocore.exceptions.NoCredentialsError(),
    ):
        with pytest.raises(UserError):
            with storage_errors("s3://bucket/run"):
                raise e
    for e in (KeyError("size"), TypeError("bad call"), AttributeError("no attribute"), ZeroDivisionError()):
        with pytest.raises(type(e)):
            with storage_errors("s3://bucket/run"):
                raise e


def test_a_local_write_reaches_the_disk_before_its_rename(tmp_path, monkeypatch):
    """Without the fsyncs a power loss can leave the renamed file empty (the rename reached the
    disk, the data did not)."""
    from pks.store import as_store

    events, real_fsync, real_replace = [], os.fsync, os.replace
    monkeypatch.setattr(
        os, "fsync", lambda fd: events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"))) or real_fsync(fd)
    )
    monkeypatch.setattr(os, "replace", lambda a, b: events.append(("replace", str(b))) or real_replace(a, b))
    out = as_store(tmp_path / "out")
    out.write_bytes("parts/x.parquet", b"data")
    final = out.path("parts/x.parquet")
    assert [e[0] for e in events] == ["fsync", "replace", "fsync"]
    assert events[0][1].startswith(final + ".tmp-") and events[1][1] == final
    assert events[2][1] == os.path.dirname(final)
    assert os.listdir(os.path.dirname(final)) == ["x.parquet"]


@pytest.mark.parametrize("root", ["local", "memory://pks-append-test"])
def test_an_append_after_a_torn_line_starts_a_line_of_its_own(root, tmp_path):
    """A kill can tear the last line of a JSONL file; the next append must not glue onto it."""
    from pks.store import as_store

    out = as_store(tmp_path if root == "local" else root)
    out.write_bytes("runs.jsonl", b'{"job": "curate"}\n{"job": "sha')
    out.append_text("runs.jsonl", '{"job": "shard"}\n')
    assert out.read_bytes("runs.jsonl").decode().splitlines() == [
        '{"job": "curate"}',
        '{"job": "sha',
        '{"job": "shard"}',
    ]
    assert out.read_jsonl("runs.jsonl") == [{"job": "curate"}, {"job": "shard"}]
