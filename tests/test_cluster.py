"""Multi-node Ray on loopback: a head and a worker node started with `ray start`, `pks curate
--address`, `ray job submit --working-dir`, and the worker node's raylet killed mid-job.

Token auth: Ray 2.60 turns it on for `ray start --head` and keeps the token in ~/.ray/auth_token;
a node or driver without it fails with InvalidAuthToken. Here every process gets
RAY_AUTH_MODE=token and a fresh RAY_AUTH_TOKEN in its environment instead, so the test never
reads or writes ~/.ray (another cluster's token stays as it is).

Isolation: each node gets its own --temp-dir. `ray start` records the cluster address in
TEMP_DIR/ray_current_cluster, and a plain `ray.init()` only joins the cluster named in
/tmp/ray/ray_current_cluster, so other Ray users on this machine keep starting their own local
Ray while this cluster is up. Teardown ends exactly the processes started here (found by their
temp dirs), never `ray stop`, which would end every Ray on the machine."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import decord
import pyarrow.parquet as pq
import pytest

from pipelines.segments import one_cpu_task
from pks.synth import synthesize

psutil = pytest.importorskip("psutil")
pytest.importorskip("ray.dashboard.modules.job.sdk", reason="ray job submit needs ray[default]")

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent  # the venv's `ray`, and its `python` first on the nodes' PATH


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def ray_cli(*args: str, env: dict) -> str:
    r = subprocess.run([str(BIN / "ray"), *args], capture_output=True, text=True, env=env, timeout=400)
    out = re.sub(r"\x1b\[[0-9;]*m", "", r.stdout + r.stderr)  # ray colours its output
    assert r.returncode == 0, out[-3000:]
    return out


def processes_under(*dirs: str) -> list:
    """The processes whose command line names one of `dirs` (every Ray daemon of a node names
    its temp dir) and all their descendants (the node's workers, whose titles do not)."""
    me = os.getpid()
    roots = [
        p
        for p in psutil.process_iter(["cmdline"])
        if p.pid != me and any(d in " ".join(p.info["cmdline"] or []) for d in dirs)
    ]
    found = {}
    for p in roots:
        try:
            for q in [p, *p.children(recursive=True)]:
                found[q.pid] = q
        except psutil.NoSuchProcess:
            continue
    return list(found.values())


def titles(procs) -> list[str]:
    """Process titles: a Ray worker shows the task it runs (ray::IDLE between tasks)."""
    found = []
    for p in procs:
        try:
            found.append(" ".join(p.cmdline()))
        except psutil.NoSuchProcess:
            continue
    return found


def raylet_of(temp_dir: str):
    (p,) = [p for p in processes_under(temp_dir) if p.name() == "raylet"]
    return p


@pytest.fixture(scope="module")
def cluster():
    """A head (1 CPU, dashboard on for job submission) and a worker node (1 CPU) on this machine."""
    head_dir = tempfile.mkdtemp(prefix="pks-head-", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    worker_dir = tempfile.mkdtemp(prefix="pks-worker-", dir="/tmp")
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(16),
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(REPO),
        # On a loaded machine the dashboard's processes start slowly (a head start once failed
        # here at load 15 on 2 cores, likely past Ray's 60 s limit); job submission needs them up.
        "RAY_DASHBOARD_STARTUP_TIMEOUT_S": "300",
        "RAY_DASHBOARD_SUBPROCESS_MODULE_WAIT_READY_TIMEOUT": "300",
    }
    env.pop("RAY_ADDRESS", None)
    port, dashboard = free_port(), free_port()
    try:
        out = ray_cli(
            "start",
            "--head",
            "--port",
            str(port),
            "--num-cpus",
            "1",
            "--temp-dir",
            head_dir,
            "--include-dashboard",
            "true",
            "--dashboard-port",
            str(dashboard),
            "--ray-client-server-port",
            str(free_port()),
            "--dashboard-agent-listen-port",
            str(free_port()),
            "--disable-usage-stats",
            env=env,
        )
        # The address to join is the head's node IP as `ray start` prints it (not 127.0.0.1).
        address = re.search(r"ray start --address='([\d.]+:\d+)'", out).group(1)
        ray_cli(
            "start",
            "--address",
            address,
            "--num-cpus",
            "1",
            "--temp-dir",
            worker_dir,
            "--dashboard-agent-listen-port",
            str(free_port()),
            "--disable-usage-stats",
            env=env,
        )
        yield {"address": address, "dashboard": f"http://127.0.0.1:{dashboard}", "env": env, "worker_dir": worker_dir}
    finally:
        procs = processes_under(head_dir, worker_dir)
        for p in procs:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(procs, timeout=30)
        shutil.rmtree(head_dir, ignore_errors=True)
        shutil.rmtree(worker_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def footage(tmp_path_factory) -> Path:
    """Six small videos, ~1-2 s of work each: a job on two 1-CPU nodes runs for several seconds."""
    d = tmp_path_factory.mktemp("footage")
    synthesize(d, 6, seed=7, n_shots=3, size=(256, 144), fps="24", shot_frames=(30, 50))
    return d


def check_run(src: Path, out: Path) -> list[dict]:
    """Every input has exactly one part; the manifest is exactly the union of the parts, with
    unique clip ids; the ok records and the clip files match one to one, each clip whole."""
    inputs = sorted(str(p) for p in src.glob("*.mp4"))
    parts = sorted((out / "parts").glob("*.parquet"))
    part_rows = [pq.read_table(p).to_pylist() for p in parts]
    sources = [{r["source_path"] for r in rows} for rows in part_rows]
    assert all(len(s) == 1 for s in sources)  # a part holds one video...
    assert sorted(s.pop() for s in sources) == inputs  # ...and every input has exactly one
    manifest = pq.read_table(out / "manifest.parquet").to_pylist()
    ids = [r["clip_id"] for r in manifest]
    assert len(set(ids)) == len(ids)
    assert sorted(ids) == sorted(r["clip_id"] for rows in part_rows for r in rows)
    ok = {r["clip_id"]: r for r in manifest if r["status"] == "ok"}
    assert ok and {p.stem for p in (out / "clips").iterdir()} == set(ok)  # no .part, no orphan, none missing
    for cid, r in ok.items():
        assert len(decord.VideoReader(str(out / "clips" / f"{cid}.mp4"))) == r["end_frame"] - r["start_frame"], cid
    assert not list((out / "parts").glob("*.tmp*"))
    return manifest


def test_ray_job_submit_with_working_dir(cluster, footage, tmp_path):
    """The README's job submission: the repository uploaded as the job's working dir (.gitignore
    and .rayignore keep .venv, .git and outputs out of the upload), the venv's python."""
    out = tmp_path / "out"
    r = subprocess.run(
        [
            str(BIN / "ray"),
            "job",
            "submit",
            "--address",
            cluster["dashboard"],
            "--working-dir",
            ".",
            "--",
            "python",
            "-m",
            "pks.cli",
            "curate",
            str(footage),
            str(out),
            "--no-shard",
        ],
        cwd=REPO,
        env=cluster["env"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert "succeeded" in r.stdout
    summary = json.loads(r.stdout[r.stdout.rindex('{"inputs"') :].splitlines()[0])
    assert summary["inputs"] == summary["processed"] == 6
    check_run(footage, out)


def test_worker_node_killed_mid_job(cluster, footage, tmp_path):
    """`pks curate --address` while the worker node's raylet is killed (SIGKILL, by pid) as soon
    as a video task runs on that node: the task is retried on the head, the job exits 0, and
    every input is accounted for exactly once with no clip duplicated, torn or lost."""
    out = tmp_path / "out"
    raylet = raylet_of(cluster["worker_dir"])
    job = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pks.cli",
            "curate",
            str(footage),
            str(out),
            "--no-shard",
            "--address",
            cluster["address"],
        ],
        env=cluster["env"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline, running = time.time() + 120, []
        while not running and job.poll() is None and time.time() < deadline:
            running = [t for t in titles(raylet.children()) if t.startswith(f"ray::{one_cpu_task.__name__}")]
            time.sleep(0.05)
        assert running, "no video task ever ran on the worker node"
        os.kill(raylet.pid, signal.SIGKILL)
        finished_at_kill = len(list((out / "parts").glob("*.parquet")))
        stdout, stderr = job.communicate(timeout=300)
    finally:
        job.kill()
    assert job.returncode == 0, stderr[-3000:]
    assert finished_at_kill < 6, "the kill should land mid-job"
    assert "the node it was running on is dead" in stdout + stderr  # Ray's word: a task was lost and retried
    assert json.loads(stdout.splitlines()[-1])["processed"] == 6  # (the nodes' log lines come first)
    check_run(footage, out)
