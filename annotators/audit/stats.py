"""Every agreement figure of a run's audit, as one dict (for `pks audit stats`, the stats
page and the run report) and as text."""
from __future__ import annotations

import math
from pathlib import Path

import pyarrow.parquet as pq

from annotators.audit.agreement import agreement, gold_accuracy, human_reference, model_vs_human
from annotators.audit.store import Store
from annotators.caption.captioner import HUMAN
from taxonomy.loader import Taxonomy


def audit_stats(out: Path, store: Store, tax: Taxonomy) -> dict:
    latest = store.latest("label")
    labels = {c: {u: a.labels for u, a in per.items()} for c, per in latest.items()}
    adjudicated = {c: a.labels for c, a in store.final("adjudication").items()}
    gold = {c: a.labels for c, a in store.final("gold").items()}
    rows = pq.read_table(Path(out) / "manifest.parquet", columns=["clip_id", "caption", "caption_source"]).to_pylist()
    model = {r["clip_id"]: r["caption"] for r in rows
             if r["caption"] and not (r["caption_source"] or "").startswith(HUMAN)}
    human = {c: human_reference(labels.get(c, {}), adjudicated.get(c), tax)
             for c in set(labels) | set(adjudicated) if c not in gold}
    failures = sum(a.failure for per in latest.values() for a in per.values())
    return {"labels": sum(len(v) for v in labels.values()), "clips_labelled": len(labels),
            "adjudicated": len(adjudicated), "failure_marks": failures,
            "agreement": agreement({c: v for c, v in labels.items() if c not in gold}, tax),
            "model_vs_human": model_vs_human(model, human, tax), "gold": gold_accuracy(labels, gold)}


def _f(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def format_stats(s: dict) -> str:
    ag, mh = s["agreement"], s["model_vs_human"]
    lines = [f"{s['labels']} labels on {s['clips_labelled']} clips by {ag['annotators']} annotators; "
             f"{s['adjudicated']} adjudicated; {s['failure_marks']} marked failure, not art",
             "", "agreement per axis (Krippendorff's alpha; shot: also mean pairwise Cohen's kappa):"]
    for axis, v in ag["per_axis"].items():
        lines.append(f"  {axis:8s} alpha {_f(v['alpha'])}" + (f"  kappa {_f(v['kappa'])}" if "kappa" in v else ""))
    if ag["pairs"]:
        lines.append("pairs of annotators (Cohen's kappa over all tag decisions, clips in common):")
        lines += [f"  {pair}: {_f(v['kappa'])} on {v['clips']}" for pair, v in ag["pairs"].items()]
    lines.append("agreement per tag (mean pairwise kappa, alpha):")
    for tag, v in ag["per_tag"].items():
        if not (math.isnan(v["kappa"]) and math.isnan(v["alpha"])):
            lines.append(f"  {tag:28s} kappa {_f(v['kappa'])}  alpha {_f(v['alpha'])}")
    lines.append(f"model vs human on {mh['clips']} clips (precision, recall, F1, support):")
    for tag, v in mh["per_tag"].items():
        lines.append(f"  {tag:28s} {_f(v['precision'])}  {_f(v['recall'])}  {_f(v['f1'])}  {v['support']}")
    if mh["confused"]:
        lines.append("most confused (model says -> people say):")
        lines += [f"  {c['model']} -> {c['human']}: {c['count']}" for c in mh["confused"]]
    if s["gold"]:
        lines.append("accuracy on gold clips (mean Jaccard of tag sets):")
        lines += [f"  {u}: {_f(v['accuracy'])} on {v['gold_clips']} clips" for u, v in s["gold"].items()]
    return "\n".join(lines)
