"""Kill a CLI run mid-way, as a crash or an operator would."""

from __future__ import annotations

import os
import signal
import subprocess
import time


def kill_9_when(cmd: list[str], started, timeout: float = 120, poll: float = 0.02, env: dict | None = None) -> None:
    """Start `cmd` (with `env`, default this process's) in its own process group; once
    `started()` is true, SIGKILL the group (the driver and its local Ray)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, env=env)
    deadline = time.time() + timeout
    while time.time() < deadline and not started():
        time.sleep(poll)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
