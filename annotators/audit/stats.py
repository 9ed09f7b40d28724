"""Every agreement figure of a run's audit, as one dict (for `pks audit stats`, the stats
page and the run report), as text, and grouped per taxonomy axis for the stats page's tables."""

from __future__ import annotations

import math
from pathlib import Path

import pyarrow.parquet as pq

from annotators.audit.agreement import agreement, gold_accuracy, human_reference, model_vs_human
from annotators.audit.store import Store
from annotators.caption.captioner import HUMAN
from taxonomy.loader import SHOT_AXIS, TAG_AXES, Taxonomy


def audit_stats(out: Path, store: Store, tax: Taxonomy) -> dict:
    latest = store.latest("label")
    labels = {c: {u: a.labels for u, a in per.items()} for c, per in latest.items()}
    adjudicated = {c: a.labels for c, a in store.final("adjudication").items()}
    gold = {c: a.labels for c, a in store.final("gold").items()}
    rows = pq.read_table(Path(out) / "manifest.parquet", columns=["clip_id", "caption", "caption_source"]).to_pylist()
    model = {
        r["clip_id"]: r["caption"] for r in rows if r["caption"] and not (r["caption_source"] or "").startswith(HUMAN)
    }
    human = {
        c: human_reference(labels.get(c, {}), adjudicated.get(c), tax)
        for c in set(labels) | set(adjudicated)
        if c not in gold
    }
    failures = sum(a.failure for per in latest.values() for a in per.values())
    return {
        "labels": sum(len(v) for v in labels.values()),
        "clips_labelled": len(labels),
        "adjudicated": len(adjudicated),
        "failure_marks": failures,
        "agreement": agreement({c: v for c, v in labels.items() if c not in gold}, tax),
        "model_vs_human": model_vs_human(model, human, tax),
        "gold": gold_accuracy(labels, gold),
    }


def number(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def format_stats(s: dict) -> str:
    ag, mh = s["agreement"], s["model_vs_human"]
    lines = [
        f"{s['labels']} labels on {s['clips_labelled']} clips by {ag['annotators']} annotators; "
        f"{s['adjudicated']} adjudicated; {s['failure_marks']} marked failure, not art",
        "",
        "agreement per axis (Krippendorff's alpha; shot: also mean pairwise Cohen's kappa):",
    ]
    for axis, v in ag["per_axis"].items():
        kappa = f"  kappa {number(v['kappa'])}" if "kappa" in v else ""
        lines.append(f"  {axis:8s} alpha {number(v['alpha'])}{kappa}")
    if ag["pairs"]:
        lines.append("pairs of annotators (Cohen's kappa over all tag decisions, clips in common):")
        lines += [f"  {pair}: {number(v['kappa'])} on {v['clips']}" for pair, v in ag["pairs"].items()]
    lines.append("agreement per tag (mean pairwise kappa, alpha):")
    for tag, v in ag["per_tag"].items():
        if not (math.isnan(v["kappa"]) and math.isnan(v["alpha"])):
            lines.append(f"  {tag:28s} kappa {number(v['kappa'])}  alpha {number(v['alpha'])}")
    lines.append(f"model vs human on {mh['clips']} clips (precision, recall, F1, support):")
    for tag, v in mh["per_tag"].items():
        lines.append(f"  {tag:28s} {number(v['precision'])}  {number(v['recall'])}  {number(v['f1'])}  {v['support']}")
    if mh["confused"]:
        lines.append("most confused (model says -> people say):")
        lines += [f"  {c['model']} -> {c['human']}: {c['count']}" for c in mh["confused"]]
    if s["gold"]:
        lines.append("accuracy on gold clips (mean Jaccard of tag sets):")
        lines += [f"  {u}: {number(v['accuracy'])} on {v['gold_clips']} clips" for u, v in s["gold"].items()]
    return "\n".join(lines)


def _undefined(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def by_axis(s: dict, tax: Taxonomy) -> list[dict]:
    """The stats page's tables: per taxonomy axis (shot last), its whole-axis agreement and a
    row per tag with any figure (annotators' kappa and alpha, the model's F1 against people),
    in taxonomy order. Tags with none (mostly tags no one has used yet) are only named, so a
    young audit's tables are not mostly n/a. The figures are audit_stats' own, untouched;
    None where a figure is not computed at all (per tag kappa and alpha of shot size, one
    answer per clip; the whole-axis kappa of the tag axes)."""
    ag, mh = s["agreement"], s["model_vs_human"]
    tables = []
    for axis in (*TAG_AXES, SHOT_AXIS):
        rows, unused = [], []
        for t in tax.axes[axis].tags:
            a = ag["per_tag"].get(f"{axis}/{t.id}", {})
            m = mh["per_tag"].get(f"{axis}/{t.id}", {})
            if not m and _undefined(a.get("kappa")) and _undefined(a.get("alpha")):
                unused.append(t.label)
                continue
            rows.append(
                {
                    "id": t.id,
                    "label": t.label,
                    "kappa": a.get("kappa"),
                    "alpha": a.get("alpha"),
                    **{k: m.get(k) for k in ("f1", "precision", "recall", "support")},
                }
            )
        whole = ag["per_axis"].get(axis, {})
        tables.append(
            {"axis": axis, "kappa": whole.get("kappa"), "alpha": whole.get("alpha"), "rows": rows, "unused": unused}
        )
    return tables


def bar(x: float | None, signed: bool = False) -> tuple[float, float] | None:
    """Where a figure's bar sits in its cell, as (left, width) in % of the cell. F1 and accuracy
    (0..1) grow from the left edge; kappa and alpha (-1..1, below 0 agreement is worse than
    chance) grow left or right from a centre line at 0. Clamped to the cell (alpha can fall
    below -1 on few clips): the number printed beside it is the exact figure. None: no figure."""
    if x is None or _undefined(x):
        return None
    if signed:
        v = max(-1.0, min(1.0, x))
        return round(50 + 50 * min(v, 0.0), 1), round(50 * abs(v), 1)
    return 0.0, round(100 * max(0.0, min(1.0, x)), 1)
