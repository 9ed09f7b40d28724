"""The golden run: fixed footage curated and sharded through the CLI gives the records and shards
committed under tests/golden/ (issue 23: a restructure must not change what the job produces).

The footage is committed (tests/golden/footage: `pks synth --videos 2 --seed 303 --shots 3
--size 192x108`), not synthesised here: libx264 in PyAV's wheel does not always give the same
bytes for the same frames (measured here: 5 runs of that synth command, 3 different outputs; 1
of 6 encodes of the same 60 decoded frames differed), so neither the sources' video_ids nor the
clips' bytes are the same from run to run. What is compared is what the job decides from fixed
input: every manifest row (floats to 6 significant digits, as OpenCV's SIMD paths may differ in
the last bits between CPUs; `source_path` reduced to the file name), each clip's frame count,
and which shard holds which clip.

After an intended change of the output: PKS_UPDATE_GOLDEN=1 pytest tests/test_golden.py, and
say in the commit why the records changed.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import av
import pyarrow.parquet as pq
import pytest

GOLDEN = Path(__file__).parent / "golden"


def pks(*args):
    """stdout and stderr together, as a terminal shows them."""
    r = subprocess.run([sys.executable, "-m", "pks.cli", *map(str, args)], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout + r.stderr


def rounded(v):
    if isinstance(v, float):
        return float(f"{v:.6g}")
    if isinstance(v, dict):
        return {k: rounded(x) for k, x in v.items()}
    if isinstance(v, list):
        return [rounded(x) for x in v]
    if isinstance(v, str) and v.startswith("{"):  # the signals JSON
        try:
            return json.dumps(rounded(json.loads(v)), sort_keys=True)
        except ValueError:
            return v
    return v


def normal(row: dict) -> dict:
    return rounded({**row, "source_path": Path(row["source_path"]).name})


def frame_count(path: Path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


@pytest.fixture(scope="module")
def golden_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("golden")
    cfg = d / "job.yaml"
    cfg.write_text("shard:\n  max_samples: 2\n  val_fraction: 0.3\n")
    said = pks("curate", GOLDEN / "footage", d / "out", "--config", cfg)
    return d / "out", said


def test_curate_keeps_ray_datas_progress_off_the_terminal(golden_run):
    out, said = golden_run
    assert "INFO" not in said and "Progress bars disabled" not in said and "ray_remote_args" not in said, said
    assert "execution finished" in (out / "logs" / "ray-data.log").read_text()  # in OUT/logs instead


def test_the_golden_run_gives_the_committed_records_and_shards(golden_run):
    out, _ = golden_run
    rows = sorted((normal(r) for r in pq.read_table(out / "manifest.parquet").to_pylist()), key=lambda r: r["clip_id"])
    clips = {p.name: frame_count(p) for p in sorted((out / "clips").glob("*.mp4"))}
    index = pq.read_table(out / "shards" / "index.parquet").to_pylist()
    shards = sorted((r["shard"], r["clip_id"], r["frames"]) for r in index)
    got = {
        "manifest.jsonl": "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows),
        "clips.json": json.dumps(clips, indent=1, sort_keys=True) + "\n",
        "shards.json": json.dumps(shards, indent=1) + "\n",
    }
    if os.environ.get("PKS_UPDATE_GOLDEN"):
        GOLDEN.mkdir(exist_ok=True)
        for name, text in got.items():
            (GOLDEN / name).write_text(text)
    assert rows and any(r["status"] == "ok" for r in rows) and index
    for name, text in got.items():
        want = (GOLDEN / name).read_text()
        if name == "manifest.jsonl":  # row by row: a failure names the clip and the fields that moved
            for a, b in zip(text.splitlines(), want.splitlines()):
                a, b = json.loads(a), json.loads(b)
                assert a == b, (
                    a["clip_id"],
                    {k: (a.get(k), b.get(k)) for k in a.keys() | b.keys() if a.get(k) != b.get(k)},
                )
        assert text == want, name
