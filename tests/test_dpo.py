"""The preference stage: the Diffusion-DPO loss on velocities, failure copies, and a tiny run
end to end on the CPU (offline and online pairs, the Judge ranking samples)."""

import copy
import json
import math
import subprocess
import sys

import pytest
import torch
import yaml

import taxonomy
from training.config import CONFIG_DIR
from training.dpo import dpo_loss, failure_copy, prompt_condition
from training.model import DiTConfig, VideoDiT

TAX = taxonomy.load()
TINY = DiTConfig(in_channels=3, patch=(2, 4, 4), dim=64, depth=2, heads=2, text_dim=32)


def forward_pair(policy, reference, x_w, x_l, noise, t):
    cond = prompt_condition([{"tags": {"camera": ["pan_left"]}, "shot": None, "stage": 2, "narrative": ""}], TAX)
    text, mask = torch.randn(1, 5, 32), torch.ones(1, 5, dtype=torch.bool)
    x = torch.cat([(1 - t) * x_w + t * noise, (1 - t) * x_l + t * noise])
    args = (
        torch.full((2,), t),
        text.repeat(2, 1, 1),
        mask.repeat(2, 1),
        {a: v.repeat(2, 1) for a, v in cond["tags"].items()},
        cond["known"].repeat(2, 1),
        cond["shot"].repeat(2),
        cond["stage"].repeat(2),
    )
    pred = policy(x, *args)
    with torch.no_grad():
        ref = reference(x, *args)
    return pred, ref, torch.cat([noise - x_w, noise - x_l])


def test_dpo_loss_has_zero_gradient_when_policy_is_reference_and_the_pair_ties():
    torch.manual_seed(0)
    policy = VideoDiT(TINY, TAX)
    for p in policy.parameters():  # AdaLN-Zero starts at zero output; make every path live
        torch.nn.init.normal_(p, std=0.05)
    reference = copy.deepcopy(policy).requires_grad_(False)
    x, noise = torch.randn(1, 3, 8, 16, 16), torch.randn(1, 3, 8, 16, 16)

    def grad(x_l):
        policy.zero_grad()
        pred, ref, target = forward_pair(policy, reference, x, x_l, noise, 0.6)
        loss, stats = dpo_loss(pred[:1], pred[1:], ref[:1], ref[1:], target[:1], target[1:], beta=2500)
        loss.backward()
        assert math.isclose(loss.item(), math.log(2), rel_tol=1e-6)  # the policy is the reference
        return max(p.grad.abs().max().item() for p in policy.parameters() if p.grad is not None), stats

    tied, stats = grad(x.clone())
    untied, _ = grad(torch.randn_like(x))
    assert stats["margin"] == 0 and untied > 1e-3  # a pair that differs pulls the policy...
    assert tied < 1e-4 * untied  # ...a tied pair does not (float rounding of the batched forward only)


def test_dpo_loss_rewards_fitting_the_preferred_sample_better_than_the_reference():
    target_w, target_l = torch.randn(2, 3, 4, 8, 8), torch.randn(2, 3, 4, 8, 8)
    ref_w, ref_l = target_w + 0.1, target_l + 0.1
    loss, stats = dpo_loss(target_w + 0.05, target_l + 0.1, ref_w, ref_l, target_w, target_l, beta=2500)
    assert loss.item() < math.log(2) and stats["implicit_acc"] == 1.0 and stats["margin"] > 0
    worse, stats = dpo_loss(target_w + 0.1, target_l + 0.05, ref_w, ref_l, target_w, target_l, beta=2500)
    assert worse.item() > math.log(2) and stats["implicit_acc"] == 0.0
    held, stats = dpo_loss(target_w + 0.1, target_l + 0.05, ref_w, ref_l, target_w, target_l, beta=2500, sft_weight=2.0)
    assert math.isclose(held.item(), worse.item() + 2.0 * 0.01, rel_tol=1e-5) and math.isclose(
        stats["fit_w"], 0.01, rel_tol=1e-4
    )


def test_failure_copies_follow_the_sample_index():
    video = torch.randint(0, 255, (8, 3, 32, 56), dtype=torch.uint8)
    a, kind_a = failure_copy(video, 0, 7)
    b, kind_b = failure_copy(video, 0, 7)
    assert kind_a == kind_b and torch.equal(a, b) and a.shape == video.shape and not torch.equal(a, video)
    assert len({failure_copy(video, 0, i)[1] for i in range(30)}) >= 4  # the kinds vary over the stream


def test_online_pairs_are_the_judges_best_and_worst_sample_of_a_prompt_a_margin_apart(monkeypatch):
    """The ranking rule on its own: samples whose Judge logits are known (the policy's sampler
    and the Judge replaced by ones whose answers the test sets; the run below uses the real ones)."""
    import training.judge
    import training.sample
    from training.config import load_train_config
    from training.dpo import online_pairs

    drawn = {}  # (narrative, seed) -> the sample's grey level

    def sample(model, text, space, cfg, tags, narrative, shot, stage, seed, steps=None, tax=None):
        level = seed % 251
        drawn[narrative, seed] = level
        return torch.full((4, 3, 8, 8), level, dtype=torch.uint8)

    gain = {"steep": 0.1, "flat": 0.001, "steep too": -0.05}  # logit per grey level

    def judge_frames(judge, frames, fps, acfg):
        logit = gain[judge_frames.prompt] * float(frames.mean())
        return 1 / (1 + math.exp(-logit)), logit, float(frames.mean()) / 255  # brighter: more deformed

    def sample_for(*a, **k):
        judge_frames.prompt = a[5]
        return sample(*a, **k)

    monkeypatch.setattr(training.sample, "sample", sample_for)
    monkeypatch.setattr(training.judge, "judge_frames", judge_frames)
    cfg = load_train_config(
        "tiny_pixel", {"dpo.k": 4, "dpo.margin": 0.5, "dpo.sample_steps": 2, "data.fps": 12, "train.seed": 0}
    )
    prompts = [{"tags": {}, "narrative": n, "shot": None, "stage": 0} for n in gain]
    pairs, stats = online_pairs(torch.nn.Linear(1, 1), None, None, cfg, prompts, None, {}, 0, TAX)
    levels = {n: sorted(v for (m, _), v in drawn.items() if m == n) for n in gain}
    assert all(len(v) == 4 and v[-1] - v[0] > 20 for v in levels.values())  # four distinct samples a prompt
    # "flat": its logits spread less than the margin (a level spread under 500), so no pair
    assert [q["prompt"]["narrative"] for q in pairs] == ["steep", "steep too"] and stats["pairs"] == 2
    w, lose = pairs[0]["w"].float().mean(), pairs[0]["l"].float().mean()
    assert (w, lose) == (levels["steep"][-1], levels["steep"][0])  # the highest logit wins, the lowest loses
    w, lose = pairs[1]["w"].float().mean(), pairs[1]["l"].float().mean()
    assert (w, lose) == (levels["steep too"][0], levels["steep too"][-1])  # (this Judge prefers darker)
    assert stats["winner_less_deformed"] == 0.5  # "steep"'s winner is brighter, "steep too"'s darker


def pks(*args):
    return subprocess.run(
        [sys.executable, "-m", "pks.cli", *map(str, args)], capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def dpo_cfg(tmp_path_factory):
    """The tiny config made smaller (8 frames of 16x16) with a dpo section that exercises both
    kinds of pairs in a few steps."""
    cfg = yaml.safe_load((CONFIG_DIR / "tiny_pixel.yaml").read_text())
    cfg["data"].update(frames=8, size=[16, 16], batch_size=4)
    cfg["train"].update(steps=2, log_every=1, ckpt_every=2, warmup=1)
    cfg["sample"]["steps"] = 3
    cfg["dpo"].update(steps=4, batch=2, pairs="mixed", k=2, margin=0.0, prompts=2, refresh=2, sample_steps=2)
    path = tmp_path_factory.mktemp("dpo-cfg") / "dpo.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def init_run(sharded_run, dpo_cfg, tmp_path_factory):
    init = tmp_path_factory.mktemp("dpo-init") / "init"
    r = pks("train", sharded_run, "--config", dpo_cfg, "--out", init)
    assert r.returncode == 0, r.stderr[-3000:]
    return init


def metrics(run) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def test_a_tiny_dpo_run_end_to_end(sharded_run, dpo_cfg, init_run, tmp_path):
    from training.judge import Judge, JudgeConfig, save

    init, run, judge = init_run, tmp_path / "dpo", tmp_path / "judge.pt"
    torch.manual_seed(0)
    save(Judge(JudgeConfig(width=8, size=32, frames=4)), judge)  # untrained: it only has to rank

    for bad, why in (
        (["--judge", judge], "needs --init"),
        (["--init", init], "pass --judge"),
        (["--init", init, "--judge", tmp_path / "nope.pt"], "no such Judge"),
    ):
        r = pks("train", sharded_run, "--stage", "dpo", "--config", dpo_cfg, "--out", run, *bad)
        assert r.returncode == 2 and why in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr

    r = pks("train", sharded_run, "--stage", "dpo", "--config", dpo_cfg, "--init", init, "--judge", judge, "--out", run)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = metrics(run)
    assert [m["step"] for m in lines] == [1, 2, 3, 4]
    assert all(math.isfinite(m["loss"]) and m["pairs_offline"] == 1 for m in lines)
    assert lines[0]["online_pairs"] == 2 and 0.0 <= lines[0]["online_judge_mean"] <= 1.0
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["dpo"]["init"] == str(init.resolve()) and cfg["model"] == "tiny"
    before = torch.load(sorted((init / "checkpoints").iterdir())[-1] / "ema.pt", weights_only=True)
    after = torch.load(run / "checkpoints" / "step-00000004" / "ema.pt", weights_only=True)
    assert before.keys() == after.keys() and any(not torch.equal(before[k], after[k]) for k in before)

    r = pks("generate", run, "--tags", "camera=pan_left,stage=2", "--out", tmp_path / "clip.mp4", "--steps", 2)
    assert r.returncode == 0 and (tmp_path / "clip.mp4").stat().st_size > 0, r.stderr[-3000:]
    r = pks("train", sharded_run, "--stage", "dpo", "--config", dpo_cfg, "--init", init, "--judge", judge, "--out", run)
    assert r.returncode == 2 and "pass --resume" in r.stderr


def test_kill_9_then_resume_reproduces_the_uninterrupted_dpo_run(sharded_run, dpo_cfg, init_run, tmp_path):
    from support.procs import kill_9_when

    cfg = yaml.safe_load(dpo_cfg.read_text())
    cfg["dpo"].update(pairs="offline", steps=6)  # offline pairs replay exactly (online ones are resampled)
    path = tmp_path / "offline.yaml"
    path.write_text(yaml.safe_dump(cfg))
    whole, run = tmp_path / "whole", tmp_path / "run"
    args = ["train", sharded_run, "--stage", "dpo", "--config", path, "--init", init_run]
    assert pks(*args, "--out", whole).returncode == 0
    kill_9_when(
        [sys.executable, "-m", "pks.cli", *map(str, args), "--out", str(run)],
        lambda: (run / "checkpoints" / "step-00000002").is_dir() and len(metrics(run)) >= 3,
        poll=0.005,
    )
    assert not (run / "checkpoints" / "step-00000006").exists()
    r = pks(*args, "--out", run, "--resume")
    assert r.returncode == 0, r.stderr[-3000:]
    assert [(m["step"], m["loss"]) for m in metrics(run)] == [(m["step"], m["loss"]) for m in metrics(whole)]
