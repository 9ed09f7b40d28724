"""The audit workbench's store, queues, agreement figures and feedback into the run."""

import json
import math
import sqlite3
import subprocess
import sys
import threading

import pytest
from typer.testing import CliRunner

import taxonomy
from annotators.audit.agreement import agreement, alpha, cohen_kappa, gold_accuracy, model_vs_human
from annotators.audit.apply import AUDIT_REJECT, apply_adjudications
from annotators.audit.queue import QueueConfig, next_clips
from annotators.audit.store import Store
from pipelines.curate import caption_run
from pipelines.parts import build_manifest, write_part
from pks.cli import app
from pks.config import load_config, replace_config
from pks.errors import UserError
from pks.record import ClipRecord, read_parquet

TAX = taxonomy.load()


def caption(**kw):
    base = {
        "narrative": "",
        "style": [],
        "motion": [],
        "camera": ["static"],
        "vfx": [],
        "shot": TAX.axes["shot"].ids[0],
    }
    return TAX.validate({**base, **kw})


# ---- agreement, against values computed by hand -----------------------------------------
def test_cohen_kappa_hand_computed():
    # 50 items: yes/yes 20, yes/no 5, no/yes 10, no/no 15. po = 35/50 = 0.7; rater a says yes
    # 25/50, rater b 30/50: pe = 0.5 * 0.6 + 0.5 * 0.4 = 0.5; kappa = (0.7 - 0.5) / 0.5 = 0.4.
    a = [1] * 20 + [1] * 5 + [0] * 10 + [0] * 15
    b = [1] * 20 + [0] * 5 + [1] * 10 + [0] * 15
    assert cohen_kappa(a, b) == pytest.approx(0.4)
    assert cohen_kappa([1, 0, 1], [1, 0, 1]) == pytest.approx(1.0)
    assert math.isnan(cohen_kappa([1, 1], [1, 1]))  # one value throughout: undefined, not perfect


def test_krippendorff_alpha_hand_computed():
    # Two coders, four units: (1,1) (1,0) (0,0) (0,0). Coincidences: o11 = 2, o10 = o01 = 1,
    # o00 = 4; n1 = 3, n0 = 5, n = 8. Do = 2/8; De = 2 * 5 * 3 / (8 * 7) = 30/56;
    # alpha = 1 - Do/De = 1 - 0.25 * 56/30 = 0.5333.
    assert alpha([[1, 1, 0, 0], [1, 0, 0, 0]]) == pytest.approx(1 - 0.25 * 56 / 30)
    # A unit only one coder saw is not pairable and changes nothing.
    assert alpha([[1, 1, 0, 0, 1], [1, 0, 0, 0, None]]) == pytest.approx(1 - 0.25 * 56 / 30)


def test_agreement_per_tag_and_axis_and_model_vs_human():
    cam = TAX.axes["camera"].ids
    pan, tilt = [t for t in cam if t.startswith("pan")][0], [t for t in cam if t.startswith("tilt")][0]
    labels = {  # two annotators agree on clips 1-3 and split on clip 4
        "c1": {"ann": caption(camera=[pan]), "bob": caption(camera=[pan])},
        "c2": {"ann": caption(camera=["static"]), "bob": caption(camera=["static"])},
        "c3": {"ann": caption(camera=[pan]), "bob": caption(camera=[pan])},
        "c4": {"ann": caption(camera=[pan]), "bob": caption(camera=[tilt])},
    }
    ag = agreement(labels, TAX)
    # camera/pan: ann 1,0,1,1 vs bob 1,0,1,0: po = 3/4, pe = 3/4*2/4 + 1/4*2/4 = 1/2, kappa = 0.5
    assert ag["per_tag"][f"camera/{pan}"]["kappa"] == pytest.approx(0.5)
    assert ag["per_tag"]["camera/static"]["kappa"] == pytest.approx(1.0)
    assert math.isnan(ag["per_axis"]["shot"]["alpha"])  # everyone gave one and the same shot size: undefined
    assert 0 < ag["per_axis"]["camera"]["alpha"] < 1
    # the pair over every tag decision: 4 clips x all tags, two decisions differ (pan, tilt on c4)
    n = 4 * sum(len(TAX.axes[a].ids) for a in ("style", "motion", "camera", "vfx"))
    yes_a, yes_b = 4, 4  # each said exactly one camera tag per clip
    po = (n - 2) / n
    pe = (yes_a * yes_b + (n - yes_a) * (n - yes_b)) / n**2
    assert ag["pairs"]["ann ~ bob"] == pytest.approx({"kappa": (po - pe) / (1 - pe), "clips": 4})
    model = {"c1": caption(camera=[pan]), "c2": caption(camera=[pan]), "c3": caption(camera=[tilt])}
    human = {"c1": caption(camera=[pan]), "c2": caption(camera=["static"]), "c3": caption(camera=[pan])}
    mh = model_vs_human(model, human, TAX)
    assert mh["per_tag"][f"camera/{pan}"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2})
    assert {"model": f"camera/{pan}", "human": "camera/static", "count": 1} in mh["confused"]
    assert {"model": f"camera/{tilt}", "human": f"camera/{pan}", "count": 1} in mh["confused"]
    gold = gold_accuracy(labels, {"c4": caption(camera=[pan])})
    assert gold["ann"]["accuracy"] == 1.0 and gold["bob"]["accuracy"] == pytest.approx(
        1 / 3
    )  # {tilt,shot} vs {pan,shot}


# ---- the store --------------------------------------------------------------------------
def test_users_tokens_and_append_only_history(tmp_path):
    s = Store(tmp_path)
    token = s.add_user("ann", "annotator")
    assert s.user(token) == ("ann", "annotator") and s.user(token + "x") is None
    with pytest.raises(UserError):
        s.add_user("ann", "lead")
    with pytest.raises(UserError):
        s.add_user("eve", "admin")
    s.submit("c1", "ann", caption(camera=["static"]))
    s.submit("c1", "ann", caption(camera=["shake"]))  # a correction is a newer row
    assert s.latest()["c1"]["ann"].labels["camera"] == ["shake"]
    assert len(s.history()) == 2
    s.submit("c2", "ann", caption(), kind="gold")
    assert s.annotators() == {"c1": {"ann"}} and s.annotators("gold") == {"c2": {"ann"}}
    assert s.latest(clip_id="c2") == {} and [a.clip_id for a in s.history(clip_id="c2")] == ["c2"]
    for sql in ("UPDATE annotations SET labels = '{}'", "DELETE FROM annotations"):
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            s.db.execute(sql)
    assert s.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_sessions_idle_out_and_a_store_from_before_idle_timeouts_still_opens(tmp_path):
    old = tmp_path / "audit" / "audit.db"
    old.parent.mkdir()
    db = sqlite3.connect(old)
    db.executescript(
        "CREATE TABLE users (name TEXT PRIMARY KEY, role TEXT NOT NULL, token_sha256 TEXT NOT NULL "
        "UNIQUE, created REAL NOT NULL); CREATE TABLE sessions (id_sha256 TEXT PRIMARY KEY, user TEXT "
        "NOT NULL, csrf TEXT NOT NULL, created REAL NOT NULL); "
        "INSERT INTO users VALUES ('ann', 'annotator', 'x', 0); "
        "INSERT INTO sessions VALUES ('y', 'ann', 'z', strftime('%s', 'now'));"
    )
    db.close()
    s = Store(tmp_path)
    assert s.purge_sessions() == 1  # the old session counts as idle
    sid, csrf = s.new_session("ann")
    assert s.session(sid) == ("ann", "annotator", csrf)
    assert s.session(sid, idle=0) is None and s.purge_sessions(idle=0) == 1 and s.session(sid) is None


def test_two_annotators_submitting_at_once_lose_nothing(tmp_path):
    Store(tmp_path).add_user("ann", "annotator")
    Store(tmp_path).add_user("bob", "annotator")

    def work(user):
        s = Store(tmp_path)  # one connection each, as the server's request threads have
        for i in range(100):
            s.submit(f"c{i % 7}", user, caption())

    threads = [threading.Thread(target=work, args=(u,)) for u in ("ann", "bob")]
    [t.start() for t in threads]
    [t.join() for t in threads]
    hist = Store(tmp_path).history()
    assert len(hist) == 200 and len({a.id for a in hist}) == 200


def test_kill_9_loses_no_acknowledged_submission(tmp_path):
    Store(tmp_path).add_user("ann", "annotator")
    code = (
        "import sys, time, json; sys.path.insert(0, '.'); from annotators.audit.store import Store; "
        f"s = Store({str(tmp_path)!r}); "
        "ids = [s.submit('c1', 'ann', {'camera': ['static']}) for _ in range(5)]; "
        "print(json.dumps(ids), flush=True); time.sleep(60)"
    )
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    acknowledged = json.loads(p.stdout.readline())
    p.kill()  # SIGKILL: no cleanup, no checkpoint
    p.wait()
    assert [a.id for a in Store(tmp_path).history()] == acknowledged


# ---- queues -----------------------------------------------------------------------------
def rows_for_queue(n=12):
    cam = TAX.axes["camera"].ids
    rows = []
    for i in range(n):
        rows.append(
            {
                "clip_id": f"c{i:02d}",
                "caption": caption(camera=[cam[1] if i == 7 else "static"]),
                "camera_motion": ["static"],
                "caption_source": "m|reasks=2" if i == 5 else "m",
            }
        )
    return rows


def test_queue_overlap_no_repeats_and_strategies():
    rows = rows_for_queue()
    done: dict[str, set[str]] = {}
    cfg = QueueConfig(overlap=2, strategy="uncertain", gold_rate=0.0)
    for _ in range(8):  # three annotators take turns until nothing is left
        for user in ("ann", "bob", "cy"):
            for c in next_clips(rows, done, set(), user, cfg):
                assert user not in done.get(c, set())
                done.setdefault(c, set()).add(user)
    assert all(len(users) == 2 for users in done.values()) and len(done) == len(rows)
    # uncertain: the clip that needed re-asks, then the one whose caption disagrees with the
    # measured camera, come first
    assert next_clips(rows, {}, set(), "ann", cfg, n=2) == ["c05", "c07"]
    # stratified: the clip with the run's rarest tag first
    assert next_clips(rows, {}, set(), "ann", QueueConfig(strategy="stratified", gold_rate=0.0))[0] == "c07"
    # a clip someone else started comes before new ones, so overlaps complete
    assert next_clips(rows, {"c09": {"bob"}}, set(), "ann", QueueConfig(strategy="random", gold_rate=0.0)) == ["c09"]


def test_queue_mixes_gold_at_the_set_rate():
    rows = rows_for_queue(20)
    gold = {"c00", "c01", "c02", "c03"}
    picks = next_clips(rows, {}, gold, "ann", QueueConfig(gold_rate=0.25), n=8)
    assert len(picks) == len(set(picks)) == 8 and len(set(picks) & gold) == 2


# ---- feedback into the run ----------------------------------------------------------------
@pytest.fixture
def run_out(tmp_path):
    cfg = load_config()
    recs = [
        ClipRecord(
            video_id="v1",
            source_path="v1.mp4",
            start_frame=s,
            end_frame=s + 24,
            fps=24.0,
            caption=caption(camera=["static"]),
            caption_source="signals|prompt=1|taxonomy=v1",
            camera_motion=["static"],
            deformation_score=0.3,
            curriculum_stage=1,
        )
        for s in (0, 24, 48)
    ]
    (tmp_path / "parts").mkdir()
    write_part(tmp_path, "v1", recs)
    build_manifest(tmp_path, cfg)
    return tmp_path, cfg, [r.clip_id for r in recs]


def test_apply_writes_human_captions_and_rejections_and_reruns_change_nothing(run_out):
    out, cfg, ids = run_out
    s = Store(out)
    s.add_user("lee", "lead")
    s.submit(ids[0], "lee", caption(camera=["shake"], narrative="fixed"), kind="adjudication")
    s.submit(ids[1], "lee", caption(), kind="adjudication", failure=True, reasons=["melting face"])
    assert apply_adjudications(out, cfg, s) == {"captions": 1, "rejected": 1, "unchanged": 0}
    recs = {r.clip_id: r for r in read_parquet(out / "manifest.parquet")}
    assert recs[ids[0]].caption["camera"] == ["shake"] and recs[ids[0]].caption_source == "human:lee"
    assert recs[ids[1]].status == "rejected" and recs[ids[1]].error == f"{AUDIT_REJECT} (melting face)"
    assert recs[ids[2]].caption_source.startswith("signals")
    assert apply_adjudications(out, cfg, s) == {"captions": 0, "rejected": 0, "unchanged": 2}
    # a later caption run never overwrites what people decided
    caption_run(out, replace_config(cfg, {"caption.captioner": "signals"}), progress=lambda *_: None)
    recs = {r.clip_id: r for r in read_parquet(out / "manifest.parquet")}
    assert recs[ids[0]].caption["camera"] == ["shake"] and recs[ids[0]].caption_source == "human:lee"


def test_audit_cli(run_out):
    out, _, _ = run_out
    runner = CliRunner()
    r = runner.invoke(app, ["audit", "add-user", str(out), "ann", "--role", "annotator"])
    assert r.exit_code == 0 and Store(out).user(r.stdout.strip()) == ("ann", "annotator")
    r = runner.invoke(app, ["audit", "add-user", str(out), "eve", "--role", "admin"])
    assert r.exit_code == 2 and "role must be one of" in r.stderr
    r = runner.invoke(app, ["audit", "stats", str(out)])
    assert r.exit_code == 0 and "0 labels on 0 clips" in r.stdout
    r = runner.invoke(app, ["audit", "stats", str(out / "nowhere")])
    assert r.exit_code == 2 and r.stderr.count("\n") == 1


def test_label_studio_export_and_import_round_trip(tmp_path):
    import xml.etree.ElementTree as ET

    from annotators.audit.labelstudio import FAILURE, export, import_
    from audit_support import make_run

    ids = make_run(tmp_path, n_clips=2)
    n = export(tmp_path, tmp_path / "ls", TAX)
    tasks = json.loads((tmp_path / "ls" / "tasks.json").read_text())
    config = ET.fromstring((tmp_path / "ls" / "config.xml").read_text())  # well-formed XML
    assert n == 2 and {t["data"]["clip_id"] for t in tasks} == set(ids)
    choices = {c.get("name"): [x.get("value") for x in c] for c in config.iter("Choices")}
    assert choices["camera"] == TAX.axes["camera"].ids and choices["failure"] == [FAILURE]
    assert {"from_name": "camera", "to_name": "video", "type": "choices", "value": {"choices": ["shake"]}} in tasks[0][
        "predictions"
    ][0]["result"]
    # what Label Studio exports: the tasks with annotations added (one valid, one with a bad tag)
    tasks[0]["annotations"] = [
        {
            "completed_by": {"email": "kim@studio.jp"},
            "result": [
                {"from_name": "camera", "type": "choices", "value": {"choices": ["pan_left"]}},
                {"from_name": "shot", "type": "choices", "value": {"choices": ["wide"]}},
                {"from_name": "failure", "type": "choices", "value": {"choices": [FAILURE]}},
            ],
        }
    ]
    tasks[1]["annotations"] = [
        {
            "completed_by": 7,
            "result": [{"from_name": "camera", "type": "choices", "value": {"choices": ["warp_drive"]}}],
        }
    ]
    (tmp_path / "export.json").write_text(json.dumps(tasks))
    s = Store(tmp_path)
    assert import_(tmp_path, tmp_path / "export.json", s, TAX) == {"imported": 1, "unknown_clip": 0, "invalid": 1}
    got = s.latest()[tasks[0]["data"]["clip_id"]]["ls-kim"]
    assert got.labels["camera"] == ["pan_left"] and got.labels["shot"] == "wide" and got.failure
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(UserError):
        import_(tmp_path, tmp_path / "bad.json", s, TAX)


def test_run_report_gains_an_audit_section(tmp_path):
    from audit_support import make_run
    from pipelines.report import write_report

    ids = make_run(tmp_path, n_clips=2)
    s = Store(tmp_path)
    for user in ("ann", "bob"):
        s.add_user(user, "annotator")
        s.submit(ids[0], user, caption(camera=["static"]))
    page = write_report(tmp_path).read_text()
    assert "<h2>Audit</h2>" in page and "2 labels on 1 clips by 2 annotators" in page
