"""Caption files as users hand them in: one JSON object, a JSON list of them, or JSONL."""

from __future__ import annotations

import json
from pathlib import Path


def read_captions(path: str | Path) -> list[tuple[str, object]]:
    """[(where, caption)]: where is the file (one object), "item N" (a list) or "line N" (JSONL).
    A file that is none of these raises ValueError naming the line that is not JSON."""
    path = Path(path)
    text = path.read_text()
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        items = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    items.append((f"line {n}", json.loads(line)))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{n}: not JSON ({e.msg})") from None
        return items
    if isinstance(data, list):
        return [(f"item {i}", x) for i, x in enumerate(data)]
    return [(str(path), data)]
