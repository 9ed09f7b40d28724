"""AniCaption: caption ok clip records through a backend, validate every answer against the
taxonomy, ask again when it is invalid (bounded), record what still fails. Cached by clip
content, model and prompt version; a taxonomy bump reuses a cached caption when migration
carries it over without loss, and recaptions only the rest."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import taxonomy
from annotators.caption.backends import Backend, Job
from annotators.caption.prompt import PROMPT_VERSION, messages, sample_frames
from pks.clips import clip_path
from pks.jobconfig import JobConfig
from pks.store import atomic_path

HUMAN = "human:"  # caption_source prefix of captions written by `pks audit apply`
CAPTION_ERROR = "caption: "  # prefix of errors this stage records (a rerun retries them)


def cache_key(record, backend: Backend) -> str:
    # clip_id is content-addressed (video hash + frame span).
    raw = f"{record.clip_id}|{backend.source}|{PROMPT_VERSION}"
    return hashlib.sha1(raw.encode()).hexdigest()[:20]


class CaptionCache:
    """One JSON file per caption under OUT/captions/, written atomically."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def get(self, key: str) -> dict | None:
        p = self.root / f"{key}.json"
        return json.loads(p.read_text()) if p.exists() else None

    def put(self, key: str, caption: dict, tax_version: int) -> None:
        p = self.root / f"{key}.json"
        with atomic_path(p) as tmp:
            tmp.write_text(json.dumps({"caption": caption, "taxonomy": tax_version}))


def from_cache(entry: dict, tax, directory=taxonomy.loader.VERSIONS_DIR) -> dict | None:
    """A cached caption valid under `tax`: as stored, or migrated without losing a tag."""
    if entry["taxonomy"] == tax.version:
        return entry["caption"]
    try:
        migrated = taxonomy.migrate(entry["caption"], entry["taxonomy"], tax.version, directory)
    except (taxonomy.CaptionError, taxonomy.TaxonomyError):
        return None
    old = entry["caption"]
    lossless = all(len(migrated[a]) == len(old.get(a, [])) for a in taxonomy.TAG_AXES)
    return migrated if lossless else None


def parse(text: str | None, tax) -> tuple[dict | None, str]:
    """Validate an answer. A tag listed twice is repaired (kept once, in order): the schema
    cannot forbid repeats, since xgrammar has no `uniqueItems`, and a repeat changes nothing."""
    if text is None:
        return None, "no answer"
    try:
        data = json.loads(text)
        if isinstance(data, dict):
            for axis in taxonomy.TAG_AXES:
                if isinstance(data.get(axis), list):
                    data[axis] = list(dict.fromkeys(data[axis]))
        return tax.validate(data), ""
    except json.JSONDecodeError as e:
        return None, f"not JSON ({e.msg} at {e.pos})"
    except taxonomy.CaptionError as e:
        return None, str(e)


def caption_records(records: list, out: Path, backend: Backend, cfg: JobConfig) -> list:
    """Return `records` with captions filled (ok clips), or status=error with the reason."""
    c = cfg.caption
    tax = taxonomy.load(c.taxonomy_version)
    source = f"{backend.source}|prompt={PROMPT_VERSION}|taxonomy=v{tax.version}"
    cache = CaptionCache(Path(out) / "captions")
    result = list(records)
    pending: dict[int, Job] = {}
    for i, r in enumerate(result):
        if r.status == "error" and r.error.startswith(CAPTION_ERROR):  # retry what failed last time
            r = result[i] = dataclasses.replace(r, status="ok", error="")
        if r.status != "ok" or r.caption_source.startswith(HUMAN):  # people's labels are never overwritten
            continue
        entry = cache.get(cache_key(r, backend))
        cap = from_cache(entry, tax) if entry else None
        if cap is not None:
            result[i] = dataclasses.replace(r, caption=cap, caption_source=source)
            continue
        clip = str(clip_path(out, r.clip_id))
        build = None
        if backend.needs_frames:

            def build(clip=clip, r=r):
                return messages(sample_frames(clip, c.frames, c.token_budget), r, tax.version)

        pending[i] = Job(record=r, clip=clip, build=build)
    reasons: dict[int, str] = {}
    for attempt in range(1 + c.repairs):  # ask again (bounded) while answers are invalid
        if not pending:
            break
        order = list(pending)
        answers = backend.answer([pending[i] for i in order])
        for i, ans in zip(order, answers):
            if ans.error and not ans.text:  # transport failure: the backend already retried
                result[i] = result[i].error_copy(f"{CAPTION_ERROR}{ans.error}")
                del pending[i]
                continue
            cap, why = parse(ans.text, tax)
            if cap is not None:
                cache.put(cache_key(result[i], backend), cap, tax.version)
                # Re-asks are recorded: the audit queue shows clips the model struggled with first.
                result[i] = dataclasses.replace(
                    result[i], caption=cap, caption_source=source + (f"|reasks={attempt}" if attempt else "")
                )
                del pending[i]
            else:
                reasons[i] = f"{why}; {ans.error}" if ans.error else why  # e.g. cut at max_tokens
    for i in pending:
        result[i] = result[i].error_copy(f"{CAPTION_ERROR}invalid answer after {1 + c.repairs} tries: {reasons[i]}")
    return result
