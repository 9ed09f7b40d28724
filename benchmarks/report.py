"""Shared by the benchmarks: print a Markdown table and optionally save it."""

from __future__ import annotations

from pathlib import Path


def emit(lines: list[str], out: str | None) -> None:
    table = "\n".join(lines)
    print(table)
    if out:
        Path(out).write_text(table + "\n")
