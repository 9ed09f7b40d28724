"""The Judge: data from a curated run (ok clips, their failure copies), split by source video,
training, saving and loading."""

import dataclasses

import numpy as np
import pytest
import torch

from pks.config import load_config
from pks.record import DEFECT_FLAGS
from training.judge import SIGNALS, Judge, JudgeConfig, auc, collect, load, save, score, split, train


def test_auc_hand_computed():
    assert auc([1, 1, 0, 0], [0.9, 0.8, 0.1, 0.2]) == 1.0
    assert auc([1, 0, 1, 0], [0.9, 0.8, 0.1, 0.2]) == 0.5  # pairs (0.9>0.8 0.9>0.2 0.1<0.8 0.1<0.2): 2/4
    assert auc([1, 0], [0.5, 0.5]) == 0.5


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(training examples, held-out examples, the Judge trained on the first)."""
    from judge_support import judge_run

    cfg = JudgeConfig(epochs=40, width=8, size=48, frames=6, val_fraction=0.34, seed=1)
    ex = collect([judge_run(tmp_path_factory.mktemp("judge") / "run")], cfg, load_config())
    assert {k.split(":")[0] for k in ex.kinds} >= {"ok", "aug"}
    assert all(
        ex.labels[p] == 1 for p, k in zip(ex.pair, ex.kinds) if k.startswith("aug")
    )  # each copy has its art clip
    tr, va = split(ex, cfg)
    assert not set(tr.videos) & set(va.videos) and va.labels and tr.labels  # split by source video
    return tr, va, train(tr, va, cfg, progress=lambda *_: None)


def test_judge_fits_its_examples_and_reloads(trained, tmp_path):
    tr, va, model = trained
    assert auc(tr.labels, score(model, tr)) > 0.9  # it can tell its training examples apart
    save(model, tmp_path / "judge.pt")
    again = load(tmp_path / "judge.pt")
    assert np.allclose(score(again, va), score(model, va), atol=1e-6)


def test_judge_shapes_and_signal_normalisation():
    m = Judge(JudgeConfig(width=8, size=32, frames=4))
    m.sig_mean.fill_(1.0)
    out = m(torch.zeros(3, 4, 6, 32, 32), torch.ones(3, len(SIGNALS)))
    assert out.shape == (3,) and torch.isfinite(out).all()


def test_judge_score_lands_in_parts_and_manifest_and_survives_reruns(tmp_path):
    from typer.testing import CliRunner

    from judge_support import judge_run
    from pipelines.curate import restage
    from pipelines.shard import rejection
    from pks.cli import app
    from pks.record import read_parquet
    from training.judge import score_run

    out = judge_run(tmp_path / "run", videos=2, shots=2)
    r = CliRunner().invoke(app, ["judge", "train", str(out), "--out", str(tmp_path / "judge.pt"), "--epochs", "2"])
    assert r.exit_code == 0 and "validation AUC" in r.stdout and (tmp_path / "judge.pt").exists()
    r = CliRunner().invoke(app, ["judge", "score", str(out), "--judge", str(tmp_path / "judge.pt")])
    assert r.exit_code == 0 and "scored 4 clips" in r.stdout
    first = {x.clip_id: x.judge_score for x in read_parquet(out / "manifest.parquet")}
    assert len(first) == 4 and all(0.0 <= v <= 1.0 for v in first.values())
    parts = {x.clip_id: x.judge_score for p in (out / "parts").glob("*.parquet") for x in read_parquet(p)}
    assert parts == first
    assert score_run(out, load(tmp_path / "judge.pt"), load_config(), progress=lambda *_: None)["scored"] == 4
    restage(out, load_config())  # another stage rewriting the parts keeps the scores
    assert {x.clip_id: x.judge_score for x in read_parquet(out / "manifest.parquet")} == first

    from pipelines.report import format_stats, run_stats, write_report

    s = run_stats(out)  # the report: histogram, and the lowest and highest scorers side by side
    assert s["judge"]["scored"] == 4 and sum(s["judge"]["hist"]) == 4 and "judge score (4 clips" in format_stats(s)
    page = write_report(out).read_text()
    assert "Judge: lowest scores" in page and "Judge: highest scores" in page
    rec = read_parquet(out / "manifest.parquet")[0]
    sc = dataclasses.replace(load_config().shard, min_judge_score=rec.judge_score + 0.01)
    clips = {p.name for p in (out / "clips").iterdir()}
    assert "judge score" in rejection(rec, clips, sc)
    assert rejection(rec, clips, dataclasses.replace(sc, min_judge_score=None)) == ""
    r = CliRunner().invoke(app, ["judge", "score", str(out), "--judge", str(tmp_path / "nope.pt")])
    assert r.exit_code == 2 and "no such Judge file" in r.stderr


def test_scoring_a_run_hands_the_judge_each_records_flags(tmp_path, monkeypatch):
    """decode_error is known from the bitstream only, so `pks judge score` passes the record's
    flags beside the clip's frames."""
    import training.judge
    from judge_support import judge_run
    from pipelines.parts import rewrite_parts
    from training.judge import score_run

    out = judge_run(tmp_path / "run", videos=1, shots=2)
    marked = []

    def mark_first(records):
        marked.append(records[0].clip_id)
        return [dataclasses.replace(records[0], quality_flags=["decode_error"]), *records[1:]]

    list(rewrite_parts(out, load_config(), mark_first))
    seen = {}

    def judge_frames(model, rgb, fps, acfg, flags=None):
        seen[len(seen)] = list(flags)
        return 0.5, 0.0, 0.0

    monkeypatch.setattr(training.judge, "judge_frames", judge_frames)
    model = Judge(JudgeConfig(width=8, size=32, frames=4))
    assert score_run(out, model, load_config(), progress=lambda *_: None)["scored"] == 2
    assert sorted(seen.values()) == [[], ["decode_error"]] and len(marked) == 1


def tiny_openclip(folder):
    """An OpenCLIP folder as the hub ships one (config + weights), tiny and random: built here."""
    import json

    import open_clip

    folder.mkdir()
    (folder / "open_clip_config.json").write_text(
        json.dumps(
            {
                "model_cfg": {
                    "embed_dim": 32,
                    "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 8, "head_width": 32},
                    "text_cfg": {"context_length": 16, "vocab_size": 1000, "width": 32, "heads": 2, "layers": 1},
                },
                "preprocess_cfg": {"mean": [0.48, 0.46, 0.41], "std": [0.27, 0.26, 0.28]},
            }
        )
    )
    torch.manual_seed(3)
    model = open_clip.create_model(f"local-dir:{folder}")
    torch.save(model.state_dict(), folder / "open_clip_pytorch_model.bin")
    return folder, model.visual


def test_an_openclip_backbone_from_a_local_folder_is_frozen_and_not_saved_in_the_judge(tmp_path):
    from typer.testing import CliRunner

    from judge_support import judge_run
    from pks.cli import app

    folder, visual = tiny_openclip(tmp_path / "clip")
    m = Judge(JudgeConfig(width=8, size=32, frames=4, backbone=str(folder)))
    assert all(torch.equal(a, b) for a, b in zip(m.frame.tower.state_dict().values(), visual.state_dict().values()))
    out = judge_run(tmp_path / "run", videos=2, shots=2)
    r = CliRunner().invoke(
        app,
        ["judge", "train", str(out), "--out", str(tmp_path / "judge.pt"), "--epochs", "2", "--backbone", str(folder)],
    )
    assert r.exit_code == 0, r.stdout
    blob = torch.load(tmp_path / "judge.pt", weights_only=True)
    assert blob["config"]["backbone"] == str(folder.resolve()) and not any("tower" in k for k in blob["state_dict"])
    judge = load(tmp_path / "judge.pt")  # the tower comes back from the folder, untouched by training
    assert all(torch.equal(a, b) for a, b in zip(judge.frame.tower.state_dict().values(), visual.state_dict().values()))
    assert torch.equal(judge.frame.proj.weight, blob["state_dict"]["frame.proj.weight"])  # the trained projection
    r = CliRunner().invoke(
        app, ["judge", "train", str(out), "--out", str(tmp_path / "j2.pt"), "--backbone", str(tmp_path)]
    )
    assert r.exit_code == 2 and "OpenCLIP folder" in r.output


def test_auc_per_failure_kind_on_a_tiny_case():
    from training.judge import auc_by_kind

    labels = [1, 1, 0, 0, 0]
    scores = [0.9, 0.5, 0.6, 0.1, 0.2]
    kinds = ["ok", "ok", "real:corrupt", "aug:boiling", "aug:frozen"]
    # real: 0.6 beats one of the two clean clips; the copies lose to both
    assert auc_by_kind(labels, scores, kinds) == {"aug:boiling": 1.0, "aug:frozen": 1.0, "real:corrupt": 0.5}
    assert auc_by_kind(labels, scores, kinds, group=lambda k: k.split(":")[0]) == {"aug": 1.0, "real": 0.5}


def test_leave_one_family_out_keeps_each_family_out_of_its_own_fold():
    from training.judge import Examples, leave_one_family_out

    fams = {}
    for f in ("cel", "painted", "limited"):
        ex = Examples()
        for v in range(2):  # an art clip and its failure copy, paired, per video
            ex.add(np.zeros(1), [0.0], 1, "ok", f"{f}{v}", 0.0)
            ex.add(np.zeros(1), [0.0], 0, "aug:frozen", f"{f}{v}", 0.0, pair=len(ex.labels) - 1)
        fams[f] = ex
    folds = list(leave_one_family_out(fams))
    assert [h for h, _, _ in folds] == ["cel", "limited", "painted"]
    for held, tr, te in folds:
        assert te is fams[held] and len(tr.labels) == 8
        assert not any(v.startswith(held) for v in tr.videos)
        # every copy still points at its own art clip after the families are put together
        assert all(tr.videos[p] == v and tr.labels[p] == 1 for p, v in zip(tr.pair, tr.videos) if p >= 0)


def test_judge_sees_analysis_resolution_and_old_judges_still_load(tmp_path):
    from training.judge import clip_example, frame_size, judge_frames

    cfg = JudgeConfig()
    rgb = np.random.default_rng(0).integers(0, 256, (40, 108, 192, 3), dtype=np.uint8)
    frames, sig = clip_example(rgb, 24.0, cfg, load_config())
    assert frames.shape == (16, 6, 108, 192) and len(sig) == len(SIGNALS)  # the analysis frames, not a thumbnail
    assert frame_size(JudgeConfig(size=48)) == (48, 28)
    old = Judge(JudgeConfig(width=8, size=32, frames=4), n_signals=10)  # before the flags were inputs
    blob = {"config": {k: v for k, v in old.cfg.__dict__.items() if k != "height"}}
    torch.save({**blob, "state_dict": old.state_dict(), "signals": list(SIGNALS[:10])}, tmp_path / "old.pt")
    again = load(tmp_path / "old.pt")
    assert frame_size(again.cfg) == (32, 32)  # trained on squares: still squares
    # ...and it scores today's examples, reading the ten signals it was trained on
    small = np.random.default_rng(1).integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)
    judged, logit, _ = judge_frames(again, small, 24.0, load_config())
    assert 0.0 <= judged <= 1.0 and np.isfinite(logit)


def test_the_judge_reads_the_detectors_flags_and_the_records():
    """One 0/1 input per defect flag: the clip's record's (decode_error is known from the
    bitstream only), or the analysis's where there is no record."""
    from training.judge import clip_example

    cfg = JudgeConfig(width=8, size=32, frames=4)
    rgb = np.random.default_rng(0).integers(0, 256, (24, 108, 192, 3), dtype=np.uint8)
    _, plain = clip_example(rgb, 24.0, cfg, load_config(), flags=[])
    _, marked = clip_example(rgb, 24.0, cfg, load_config(), flags=["decode_error", "letterbox"])
    _, analysed = clip_example(rgb, 24.0, cfg, load_config())  # no record: the analysis's own flags
    i, k = SIGNALS.index("flag:decode_error"), len(SIGNALS) - len(DEFECT_FLAGS)
    assert plain[k:] == [0.0] * len(DEFECT_FLAGS) and marked[k:] == [float(f == "decode_error") for f in DEFECT_FLAGS]
    assert plain[:k] == marked[:k] == analysed[:k] and marked[i] == 1.0
    assert analysed[k:] != plain[k:]  # noise: the analysis flags it; the (made-up) record did not
    assert "flag:letterbox" not in SIGNALS  # a format flag is not a defect


def test_a_flagged_clip_scores_below_every_unflagged_one():
    """The Judge's labels call a flagged clip a failure, so whatever the network says of it, a
    defect flag ranks it below the clips no flag caught; among those the network decides."""
    torch.manual_seed(0)
    model = Judge(JudgeConfig(width=8, size=32, frames=4)).eval()
    frames = torch.rand(8, 4, 6, 32, 32)
    signals = torch.cat([torch.randn(8, len(SIGNALS) - len(DEFECT_FLAGS)), torch.zeros(8, len(DEFECT_FLAGS))], 1)
    signals[[1, 6], len(SIGNALS) - len(DEFECT_FLAGS) + torch.tensor([0, 3])] = 1.0  # decode_error, decoder_garbage
    with torch.no_grad():
        logits = model(frames, signals)
        plain = model(frames, signals[:, : len(SIGNALS) - len(DEFECT_FLAGS)])  # the network's own say
    flagged = torch.tensor([i in (1, 6) for i in range(8)])
    assert logits[flagged].max() < logits[~flagged].min()
    assert torch.equal(logits[~flagged], plain[~flagged])
