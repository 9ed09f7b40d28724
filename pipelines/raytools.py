"""Ray for the curation jobs: start it where work needs it (a cluster at `ray.address` or
RAY_ADDRESS, else a local one), and stop, when a library call ends, the Ray that call started."""
from __future__ import annotations

import contextlib
import os
import sys


def ray_up() -> bool:
    ray = sys.modules.get("ray")  # not imported: not started (and not worth importing to ask)
    return ray is not None and ray.is_initialized()


@contextlib.contextmanager
def ray_scope():
    """For a library call (run, caption_run, shard_run): stop, when it ends, the Ray it started
    (init_ray starts one where work needs it); a Ray that was up before, the caller's, keeps
    running."""
    was_up = ray_up()
    try:
        yield
    finally:
        if not was_up and ray_up():
            sys.modules["ray"].shutdown()


def init_ray(cfg: dict) -> None:
    import ray

    if ray.is_initialized():
        return
    address = cfg["ray"].get("address") or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address)
    else:
        ray.init(num_cpus=cfg["ray"].get("num_cpus"), include_dashboard=False,
                 log_to_driver=False, configure_logging=True, logging_level="WARNING")
