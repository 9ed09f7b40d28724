"""What `pks train SOURCE ...` runs, above the loops it chooses between: the flow-matching loop
(training/train.py) in this process or on Ray Train, or the preference stage (training/dpo.py)."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path

from pks.errors import UserError
from pks.store import jsonl_entries
from pks.typedconfig import parse_sets
from training.config import TrainConfig, load_train_config
from training.dpo import dpo_config, train_dpo
from training.train import train


def train_ray(
    source: str | Path,
    run: str | Path,
    cfg: TrainConfig,
    workers: int,
    use_gpu: bool,
    resume: bool,
    allow_stale: bool = False,
) -> dict:
    """The same loop on a Ray cluster through Ray Train's TorchTrainer: one worker per GPU (or
    CPU process), the process group set up by Ray; RUN must be on storage every node sees."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    run = Path(run).resolve()

    def loop(config):
        from ray import train as ray_train

        metrics = train(
            config["source"],
            config["run"],
            config["cfg"],
            config["resume"],
            progress=False,
            allow_stale=config["allow_stale"],
        )
        ray_train.report(metrics)

    trainer = TorchTrainer(
        loop,
        train_loop_config={
            "source": str(Path(source).resolve()),
            "run": str(run),
            "cfg": copy.deepcopy(cfg),
            "resume": resume,
            "allow_stale": allow_stale,
        },
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu),
        run_config=RunConfig(name="pks-train", storage_path=str(run / "ray")),
    )
    trainer.fit()
    lines = jsonl_entries((run / "metrics.jsonl").read_text())  # a line torn by a killed worker is skipped
    return lines[-1] if lines else {}


def job_config(
    config: str | Path,
    steps: int | None = None,
    batch_size: int | None = None,
    tag_channel: bool = True,
    sets: Sequence[str] = (),
) -> TrainConfig:
    """The config a `pks train` run trains with: the named config, its `--set` values, then the
    options given (an option left out keeps what `--set` said, e.g. `--set train.steps=6000`)."""
    given = {"train.steps": steps, "data.batch_size": batch_size, "tag_channel": None if tag_channel else False}
    return load_train_config(config, {**parse_sets(sets), **{k: v for k, v in given.items() if v is not None}})


def train_job(
    source: str | Path,
    run: Path,
    config: str | Path,
    steps: int | None = None,
    batch_size: int | None = None,
    tag_channel: bool = True,
    stage: str = "sft",
    init: Path | None = None,
    judge: Path | None = None,
    ray_workers: int | None = None,
    gpu: bool = False,
    resume: bool = False,
    allow_stale: bool = False,
    sets: Sequence[str] = (),
) -> dict:
    """What `pks train SOURCE ...` runs: the flow-matching stage in this process (or one of
    torchrun's), on Ray Train with `ray_workers`, or the preference stage from `init`. Checks the
    combination of options first (one line each). Returns the last logged metrics."""
    if stage not in ("sft", "dpo"):
        raise UserError(f"--stage must be sft or dpo, got {stage!r}")
    if stage == "dpo":
        if init is None:
            raise UserError("--stage dpo needs --init RUN (a pks train run to start from)")
        if ray_workers or not tag_channel:
            raise UserError("--stage dpo runs in one process on raw shards (no --ray-workers or ablation)")
        base = load_train_config(config).dpo
        if not base:
            raise UserError(f"training config {config} has no dpo section (see training/configs/tiny.yaml)")
        return train_dpo(
            source, init, judge, run, dpo_config(base, {"steps": steps, "batch": batch_size}), resume=resume
        )
    if init or judge:
        raise UserError("--init and --judge belong to --stage dpo")
    cfg = job_config(config, steps, batch_size, tag_channel, sets)
    if ray_workers:
        return train_ray(source, run, cfg, ray_workers, gpu, resume, allow_stale)
    return train(source, run, cfg, resume=resume, allow_stale=allow_stale)
