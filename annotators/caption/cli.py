"""`pks serve-vlm`: the recommended vLLM server for captioning (registered by pks.cli)."""

from __future__ import annotations

import json

import typer

from pks.cliutil import friendly
from pks.errors import UserError


@friendly
def serve_vlm(
    model: str = typer.Option("Qwen/Qwen2.5-VL-7B-Instruct", help="Model to serve."),
    port: int = typer.Option(8000),
    frames: int = typer.Option(4, help="Images per request (caption.frames)."),
    start: bool = typer.Option(False, help="Start it (needs vllm installed) instead of printing."),
):
    """The recommended `vllm serve` command for captioning (prefix caching for the fixed
    taxonomy prompt, structured outputs for the JSON Schema, room for the clip's frames)."""
    import shlex
    import subprocess

    cmd = [
        "vllm",
        "serve",
        model,
        "--port",
        str(port),
        "--max-model-len",
        "16384",
        "--limit-mm-per-prompt",
        json.dumps({"image": frames}),
        "--enable-prefix-caching",
        "--structured-outputs-config",
        json.dumps({"backend": "xgrammar"}),
        "--mm-processor-kwargs",
        json.dumps({"max_pixels": 256 * 28 * 28}),
    ]
    line = " ".join(shlex.quote(c) for c in cmd)
    if not start:
        typer.echo(line)
        typer.echo(
            f"# then: pks curate IN OUT --captioner openai --endpoint http://HOST:{port}/v1 --model {model}", err=True
        )
        return
    try:
        raise typer.Exit(subprocess.call(cmd))
    except FileNotFoundError:
        raise UserError("vllm is not installed here (it needs a GPU; see pks serve-vlm without --start)") from None
