"""Interop with Label Studio, for teams already on it: a labelling config generated from the
taxonomy, tasks with the model caption as a prediction, and an importer for Label Studio's
JSON export that turns each annotation into a label in the audit store.

The config is plain Label Studio XML (Video + Choices per axis + TextArea); tag ids are the
choice values, definitions their hints, so answers map back to taxonomy ids unchanged.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

import pyarrow.parquet as pq

from annotators.audit.store import Store
from pks.errors import UserError
from taxonomy.loader import SHOT_AXIS, TAG_AXES, CaptionError, Taxonomy

FAILURE = "failure, not art"


def label_config(tax: Taxonomy) -> str:
    lines = ["<View>", '  <Video name="video" value="$video" frameRate="$fps"/>']
    for axis in (*TAG_AXES, SHOT_AXIS):
        ax = tax.axes[axis]
        lines.append(f"  <Header value={quoteattr(axis)}/>")
        choice = "single" if axis == SHOT_AXIS else "multiple"
        lines.append(f'  <Choices name={quoteattr(axis)} toName="video" choice="{choice}" showInline="true">')
        lines += [
            f"    <Choice value={quoteattr(t.id)} alias={quoteattr(t.id)} hint={quoteattr(t.definition)}/>"
            for t in ax.tags
        ]
        lines.append("  </Choices>")
    lines += [
        '  <Header value="narrative"/>',
        '  <TextArea name="narrative" toName="video" maxSubmissions="1" editable="true"/>',
        f'  <Choices name="failure" toName="video" choice="multiple"><Choice value={quoteattr(FAILURE)}/></Choices>',
        "</View>",
    ]
    return "\n".join(lines) + "\n"


def _result(caption: dict) -> list[dict]:
    res = [
        {"from_name": axis, "to_name": "video", "type": "choices", "value": {"choices": list(caption.get(axis) or [])}}
        for axis in TAG_AXES
        if caption.get(axis)
    ]
    if caption.get(SHOT_AXIS):
        res.append(
            {"from_name": SHOT_AXIS, "to_name": "video", "type": "choices", "value": {"choices": [caption[SHOT_AXIS]]}}
        )
    if caption.get("narrative"):
        res.append(
            {
                "from_name": "narrative",
                "to_name": "video",
                "type": "textarea",
                "value": {"text": [caption["narrative"]]},
            }
        )
    return res


def export(out: Path, dest: Path, tax: Taxonomy, video_prefix: str = "/data/local-files/?d=clips/") -> int:
    """Write dest/config.xml and dest/tasks.json (ok clips with a clip file); returns tasks written."""
    rows = pq.read_table(
        Path(out) / "manifest.parquet", columns=["clip_id", "status", "fps", "caption", "caption_source"]
    ).to_pylist()
    tasks = []
    for r in rows:
        if r["status"] != "ok" or not (Path(out) / "clips" / f"{r['clip_id']}.mp4").exists():
            continue
        task: dict[str, Any] = {
            "data": {"video": f"{video_prefix}{r['clip_id']}.mp4", "clip_id": r["clip_id"], "fps": r["fps"]}
        }
        if r["caption"]:
            task["predictions"] = [{"model_version": r["caption_source"] or "model", "result": _result(r["caption"])}]
        tasks.append(task)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "config.xml").write_text(label_config(tax))
    (dest / "tasks.json").write_text(json.dumps(tasks, indent=1))
    return len(tasks)


def _annotator(a: dict) -> str:
    who = a.get("completed_by")
    if isinstance(who, dict):
        who = who.get("email") or who.get("id")
    name = re.sub(r"[^A-Za-z0-9._-]", "_", str(who if who is not None else "unknown").split("@")[0])
    return f"ls-{name}"


def import_(out: Path, path: Path, store: Store, tax: Taxonomy) -> dict[str, int]:
    """Each annotation of a Label Studio JSON export -> a label by user `ls-NAME` (created as an
    annotator without a login). An answer the taxonomy rejects is counted and skipped, not
    stored half-right."""
    try:
        tasks = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: not a Label Studio JSON export ({e})") from None
    if not isinstance(tasks, list):
        raise UserError(f"{path}: a Label Studio JSON export is a list of tasks")
    known = set(pq.read_table(Path(out) / "manifest.parquet", columns=["clip_id"]).column("clip_id").to_pylist())
    counts = {"imported": 0, "unknown_clip": 0, "invalid": 0}
    for task in tasks:
        clip = (task.get("data") or {}).get("clip_id")
        for a in task.get("annotations") or []:
            if a.get("was_cancelled"):
                continue
            if clip is None or clip not in known:
                counts["unknown_clip"] += 1
                continue
            caption: dict[str, Any] = {axis: [] for axis in TAG_AXES}
            caption.update(narrative="", **{SHOT_AXIS: ""})
            failure = False
            for item in a.get("result") or []:
                name, value = item.get("from_name"), item.get("value") or {}
                if name in TAG_AXES:
                    caption[name] = list(value.get("choices") or [])
                elif name == SHOT_AXIS:
                    caption[SHOT_AXIS] = (value.get("choices") or [""])[0]
                elif name == "narrative":
                    caption["narrative"] = " ".join(value.get("text") or [])
                elif name == "failure":
                    failure = FAILURE in (value.get("choices") or [])
            try:
                labels = tax.validate(caption)
            except CaptionError:
                counts["invalid"] += 1
                continue
            user = _annotator(a)
            store.ensure_user(user, "annotator")
            store.submit(clip, user, labels, mode="label-studio", failure=failure)
            counts["imported"] += 1
    return counts
