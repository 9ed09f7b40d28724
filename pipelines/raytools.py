"""Ray for the curation jobs: start it where work needs it (a cluster at `ray.address` or
RAY_ADDRESS, else a local one), and stop, when a library call ends, the Ray that call started."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from pathlib import Path

from pks.jobconfig import RayConfig


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


def init_ray(rc: RayConfig, logs: Path | None = None) -> None:
    """Start Ray where work needs it; with `logs` (OUT/logs of a local OUT) Ray Data's own
    progress and plans are written there instead of the terminal (see quiet_ray_data)."""
    import ray

    quiet_ray_data(logs)
    if ray.is_initialized():
        return
    address = rc.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address)
    else:
        ray.init(
            num_cpus=rc.num_cpus,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=True,
            logging_level=logging.WARNING,
        )


def quiet_ray_data(logs: Path | None = None) -> None:
    """Ray Data prints its plan and a progress report at INFO every 10 s to the terminal of a
    non-interactive `pks curate`: keep the terminal for pks's own lines (Ray Data's warnings and
    errors still reach it) and put the INFO lines in `logs`/ray-data.log (Ray's session folder
    holds them too)."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    log = logging.getLogger("ray.data")
    for h in log.handlers:
        if not isinstance(h, logging.FileHandler):
            h.setLevel(logging.WARNING)
            if not any(isinstance(f, _NotProgressNotice) for f in h.filters):
                h.addFilter(_NotProgressNotice())
    if logs is not None:
        path = Path(logs) / "ray-data.log"
        if not any(getattr(h, "baseFilename", None) == str(path) for h in log.handlers):
            path.parent.mkdir(parents=True, exist_ok=True)
            handler = logging.FileHandler(path)
            handler.setLevel(logging.INFO)
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
            log.addHandler(handler)
    # Our tasks' retry settings (max_retries, retry_exceptions) have no named parameter in Ray
    # Data yet, so every map call would warn that `ray_remote_args` is deprecated.
    warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated", module="pipelines")


def logs_of(out) -> Path | None:
    """OUT/logs for a local OUT (a Store or a path), else None."""
    from pks.store import as_store

    store = as_store(out)
    return Path(store.path("logs")) if store.local else None


class _NotProgressNotice(logging.Filter):
    """Ray Data warns, once per dataset, that the progress bars this module turned off are off."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Progress bars disabled")
