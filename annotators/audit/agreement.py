"""Agreement between annotators, and between the model's captions and people.

Per tag (each tag of a multi-label axis is a yes/no decision per clip): mean pairwise Cohen's
kappa and Krippendorff's alpha across all annotators (`krippendorff` package, nominal, missing
values allowed). Per axis: alpha over all of the axis's yes/no decisions (the shot axis: one
nominal value per clip). Model vs human per tag: precision, recall and F1 of the model caption
against the human reference (a lead's adjudication, else the annotators' majority), and the
tag pairs the model most often confuses (says A where people say B, on the same axis).
Cohen's kappa is written out here (five lines) rather than pulling in scikit-learn.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from typing import Any

import krippendorff
import numpy as np

from taxonomy.loader import SHOT_AXIS, TAG_AXES, Taxonomy


def cohen_kappa(a: list, b: list) -> float:
    """Cohen's kappa of two raters' nominal labels on the same items (nan when undefined:
    no items, or both raters used one and the same value throughout)."""
    if not a or len(a) != len(b):
        return math.nan
    n = len(a)
    po = sum(x == y for x, y in zip(a, b)) / n
    ca, cb = Counter(a), Counter(b)
    pe = sum(ca[k] * cb[k] for k in set(ca) | set(cb)) / (n * n)
    return math.nan if pe == 1.0 else (po - pe) / (1.0 - pe)


def alpha(matrix: list[list]) -> float:
    """Krippendorff's alpha (nominal) of a raters x units matrix with None for missing."""
    data = np.array([[np.nan if v is None else v for v in row] for row in matrix], float)
    if data.size == 0 or np.sum(~np.isnan(data).all(axis=0) & (np.sum(~np.isnan(data), axis=0) >= 2)) == 0:
        return math.nan
    try:
        return float(krippendorff.alpha(reliability_data=data, level_of_measurement="nominal"))
    except ValueError:  # one value in the whole domain: agreement is undefined, not perfect
        return math.nan


def _decisions(labels: dict, axis: str, tag: str | None):
    return labels.get(SHOT_AXIS) if axis == SHOT_AXIS else int(tag in labels.get(axis, []))


def human_reference(labels_by_user: dict[str, dict], adjudicated: dict | None, tax: Taxonomy) -> dict:
    """The adjudication when there is one, else each tag kept by more than half the annotators
    (shot: the most common answer, ties to the first in taxonomy order)."""
    if adjudicated is not None:
        return adjudicated
    answers = list(labels_by_user.values())
    out: dict = {"narrative": ""}
    for axis in TAG_AXES:
        votes = Counter(t for a in answers for t in a.get(axis, []))
        out[axis] = [t for t in tax.axes[axis].ids if votes[t] * 2 > len(answers)]
    shots = Counter(a.get(SHOT_AXIS) for a in answers)
    out[SHOT_AXIS] = max(tax.axes[SHOT_AXIS].ids, key=lambda t: shots[t])
    return out


def _mean_pairwise_kappa(rows: dict[str, list]) -> float:
    """Mean Cohen's kappa over pairs of raters with at least 2 items in common (None: not
    rated); pairs where kappa is undefined are left out."""
    kappas = []
    for u, v in itertools.combinations(sorted(rows), 2):
        both = [(x, y) for x, y in zip(rows[u], rows[v]) if x is not None and y is not None]
        if len(both) >= 2:
            kappas.append(cohen_kappa([x for x, _ in both], [y for _, y in both]))
    kappas = [k for k in kappas if not math.isnan(k)]
    return float(np.mean(kappas)) if kappas else math.nan


def agreement(labels: dict[str, dict[str, dict]], tax: Taxonomy) -> dict:
    """labels: {clip_id: {user: caption}}. Per tag and per axis: kappa and alpha."""
    users = sorted({u for per in labels.values() for u in per})
    clips = sorted(labels)
    per_tag, per_axis = {}, {}
    for axis in (*TAG_AXES, SHOT_AXIS):
        tags = [None] if axis == SHOT_AXIS else tax.axes[axis].ids
        axis_rows: dict[str, list] = {u: [] for u in users}
        for tag in tags:
            rows = {
                u: [(_decisions(labels[c][u], axis, tag) if u in labels[c] else None) for c in clips] for u in users
            }
            for u in users:
                axis_rows[u] += rows[u]
            if tag is None:
                continue
            per_tag[f"{axis}/{tag}"] = {"kappa": _mean_pairwise_kappa(rows), "alpha": alpha(list(rows.values()))}
        codes = {t: i for i, t in enumerate(tax.axes[SHOT_AXIS].ids)}
        matrix = [[codes.get(v, v) if axis == SHOT_AXIS and v is not None else v for v in axis_rows[u]] for u in users]
        per_axis[axis] = {"alpha": alpha(matrix)}
        if axis == SHOT_AXIS:
            per_axis[axis]["kappa"] = _mean_pairwise_kappa(axis_rows)
    pairs = {}  # each pair of annotators: kappa over every yes/no tag decision on the clips both labelled
    for u, v in itertools.combinations(users, 2):
        both = [c for c in clips if u in labels[c] and v in labels[c]]
        a = [_decisions(labels[c][u], ax, t) for c in both for ax in TAG_AXES for t in tax.axes[ax].ids]
        b = [_decisions(labels[c][v], ax, t) for c in both for ax in TAG_AXES for t in tax.axes[ax].ids]
        pairs[f"{u} ~ {v}"] = {"kappa": cohen_kappa(a, b), "clips": len(both)}
    return {"annotators": len(users), "clips": len(clips), "per_tag": per_tag, "per_axis": per_axis, "pairs": pairs}


def model_vs_human(model: dict[str, dict], human: dict[str, dict], tax: Taxonomy, top: int = 10) -> dict:
    """Per tag precision / recall / F1 of model captions against human references on the clips
    both have, and the most confused (model tag, human tag) pairs within an axis."""
    common = sorted(set(model) & set(human))
    per_tag: dict[str, dict] = {}
    confused: Counter[tuple[str, str]] = Counter()
    for axis in (*TAG_AXES, SHOT_AXIS):
        for tag in tax.axes[axis].ids:

            def has(c, t=tag, ax=axis):
                return c.get(ax) == t if ax == SHOT_AXIS else t in c.get(ax, [])

            tp = sum(has(model[c]) and has(human[c]) for c in common)
            fp = sum(has(model[c]) and not has(human[c]) for c in common)
            fn = sum(not has(model[c]) and has(human[c]) for c in common)
            if tp + fp + fn == 0:
                continue
            p = tp / (tp + fp) if tp + fp else math.nan
            r = tp / (tp + fn) if tp + fn else math.nan
            f1 = 2 * tp / (2 * tp + fp + fn)
            per_tag[f"{axis}/{tag}"] = {"precision": p, "recall": r, "f1": f1, "support": tp + fn}
        for c in common:
            m: set[Any] = {model[c].get(axis)} if axis == SHOT_AXIS else set(model[c].get(axis, []))
            h: set[Any] = {human[c].get(axis)} if axis == SHOT_AXIS else set(human[c].get(axis, []))
            for a, b in itertools.product(sorted(m - h), sorted(h - m)):
                confused[(f"{axis}/{a}", f"{axis}/{b}")] += 1
    return {
        "clips": len(common),
        "per_tag": per_tag,
        "confused": [{"model": a, "human": b, "count": n} for (a, b), n in confused.most_common(top)],
    }


def gold_accuracy(labels: dict[str, dict[str, dict]], gold: dict[str, dict]) -> dict[str, dict]:
    """Per annotator, on the gold clips they labelled: the mean Jaccard overlap of their tag set
    (all axes, shot included) with the gold answer, and how many gold clips that covers."""

    def tagset(c):
        return {f"{ax}/{t}" for ax in TAG_AXES for t in c.get(ax, [])} | {f"{SHOT_AXIS}/{c.get(SHOT_AXIS)}"}

    scores: dict[str, list[float]] = {}
    for clip, answer in gold.items():
        for user, given in labels.get(clip, {}).items():
            g, a = tagset(answer), tagset(given)
            scores.setdefault(user, []).append(len(g & a) / len(g | a) if g | a else 1.0)
    return {u: {"accuracy": float(np.mean(s)), "gold_clips": len(s)} for u, s in sorted(scores.items())}
