"""Caption backends behind one interface: jobs in (a clip record, its clip file, the chat
messages), raw answers out. Validation and repair live in captioner.py, not here."""
from __future__ import annotations

import asyncio
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Callable

import taxonomy


@dataclass
class Job:
    record: object  # ClipRecord
    clip: str  # path of the clip video
    build: Callable[[], list] | None = None  # makes the chat messages (model backends), lazily
    messages: list | None = None  # the messages, once built


@dataclass
class Answer:
    text: str | None = None
    error: str | None = None


class Backend(ABC):
    needs_frames = True

    @property
    @abstractmethod
    def source(self) -> str:
        """Who writes the captions, for caption_source and the cache key."""

    @abstractmethod
    def answer(self, jobs: list[Job]) -> list[Answer]:
        ...


class _Retryable(Exception):
    pass


@dataclass
class OpenAIBackend(Backend):
    """A vLLM (or any OpenAI-compatible) server: /v1/chat/completions, images as data URLs,
    decoding constrained to the taxonomy's JSON Schema via `response_format`."""
    endpoint: str  # e.g. http://localhost:8000/v1
    model: str
    schema: dict = field(default_factory=lambda: taxonomy.load().json_schema())
    concurrency: int = 8
    timeout_s: float = 120.0
    retries: int = 3  # on 5xx, timeouts and connection errors, with exponential backoff
    backoff_s: float = 0.5
    max_tokens: int = 512
    temperature: float = 0.2
    constrained: bool = True
    extra_body: dict = field(default_factory=dict)  # server-specific fields, e.g. vLLM sampling params

    @property
    def source(self) -> str:
        return f"openai:{self.model}"

    def body(self, messages: list) -> dict:
        body = {"model": self.model, "messages": messages, "max_tokens": self.max_tokens,
                "temperature": self.temperature}
        if self.constrained:
            body["response_format"] = {"type": "json_schema",
                                       "json_schema": {"name": "pks_caption", "schema": self.schema, "strict": True}}
        return {**body, **self.extra_body}

    def answer(self, jobs: list[Job]) -> list[Answer]:
        return asyncio.run(self._all(jobs))

    async def _all(self, jobs: list[Job]) -> list[Answer]:
        import httpx

        sem = asyncio.Semaphore(self.concurrency)
        limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
        async with httpx.AsyncClient(timeout=self.timeout_s, limits=limits) as client:
            async def one(job: Job) -> Answer:
                async with sem:
                    return await self._one(client, job)
            return await asyncio.gather(*(one(j) for j in jobs))

    async def _one(self, client, job: Job) -> Answer:
        import httpx

        url = self.endpoint.rstrip("/") + "/chat/completions"
        if job.messages is None:  # built here, in a thread, so preparing overlaps requests in flight
            try:
                job.messages = await asyncio.to_thread(job.build)
            except Exception as e:  # an unreadable clip is this clip's error
                return Answer(error=f"cannot prepare prompt: {type(e).__name__}: {e}")
        last = ""
        for attempt in range(self.retries + 1):
            try:
                r = await client.post(url, json=self.body(job.messages))
                if r.status_code >= 500:
                    raise _Retryable(f"HTTP {r.status_code}: {r.text[:200]}")
                if r.status_code >= 400:
                    return Answer(error=f"HTTP {r.status_code}: {r.text[:300]}")
                choice = r.json()["choices"][0]
                if choice.get("finish_reason") == "length":
                    return Answer(text=choice["message"]["content"], error="answer cut at max_tokens")
                return Answer(text=choice["message"]["content"])
            except httpx.TimeoutException:
                last = f"timed out after {self.timeout_s}s"
            except httpx.TransportError as e:
                last = f"cannot reach {url}: {type(e).__name__}: {e}"
            except _Retryable as e:
                last = str(e)
            except (ValueError, KeyError, IndexError) as e:
                return Answer(error=f"malformed response: {e}")
            if attempt < self.retries:
                await asyncio.sleep(self.backoff_s * 2 ** attempt)
        return Answer(error=f"{last} ({self.retries + 1} attempts)")


@dataclass
class SignalsBackend(Backend):
    """No model: only the tags that can be measured from pixels. Narrative stays empty and
    the shot size 'unspecified'. The default when no endpoint or model is configured."""
    needs_frames = False

    @property
    def source(self) -> str:
        return "signals"

    def answer(self, jobs: list[Job]) -> list[Answer]:
        tax = taxonomy.load()
        camera_ids = set(tax.axes["camera"].ids)
        out = []
        for job in jobs:
            r = job.record
            vfx = (["impact_frame"] if r.impact_frames else []) + (["smear_frame"] if r.smear_frames else [])
            cap = {"narrative": "", "style": [], "motion": [],
                   "camera": [t for t in r.camera_motion if t in camera_ids],
                   "vfx": vfx, "shot": "unspecified"}
            out.append(Answer(text=json.dumps(cap)))
        return out


def make_backend(cfg: dict) -> Backend:
    """The backend a job config asks for. 'auto' is openai when an endpoint and model are set,
    else signals."""
    c = cfg["caption"]
    name = c.get("captioner", "auto")
    if name == "auto":
        name = "openai" if c.get("endpoint") and c.get("model") else "signals"
    if name == "signals":
        return SignalsBackend()
    if name == "openai":
        if not (c.get("endpoint") and c.get("model")):
            raise ValueError("captioner 'openai' needs --endpoint URL and --model NAME")
        return OpenAIBackend(endpoint=c["endpoint"], model=c["model"], concurrency=c["concurrency"],
                             timeout_s=c["timeout_s"], retries=c["retries"], max_tokens=c["max_tokens"],
                             temperature=c["temperature"], constrained=c.get("constrained", True))
    raise ValueError(f"unknown captioner {name!r}; choose from auto, signals, openai")
