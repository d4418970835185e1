"""An HTTP API for programs: OpenAI-compatible chat about an image, and batch scoring.

* ``POST /v1/chat/completions`` — OpenAI's chat format; the image comes as an
  ``image_url`` part (a ``data:`` URL, or a local path when the server allows a
  folder); ``"stream": true`` streams server-sent events like OpenAI does.
* ``POST /v1/score`` — ``{"images": [url, ...], "task": "quality"}`` → score,
  level, probabilities and spread per image. Requests that arrive together are
  merged into one forward pass (up to ``max_batch`` images).
* ``GET /v1/models``, ``GET /health``.

Binds to 127.0.0.1 by default. With an API key every ``/v1`` request needs
``Authorization: Bearer KEY`` (compared in constant time). Errors are JSON in
OpenAI's shape: ``{"error": {"message", "type", "code"}}``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse

from qsit.images import ImageLoadError


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    max_request_bytes: int = 20 * 2**20
    max_images_per_request: int = 32
    allow_local_dir: Path | None = None
    """Local image paths are accepted only under this folder (None: only data URLs)."""
    max_batch: int = 8
    batch_wait_s: float = 0.0
    """Extra time the batcher waits for more requests once one has arrived. Under load, requests
    queue up while a forward pass runs and are merged anyway, so the default adds no latency."""
    max_new_tokens: int = 512
    default_task: str = "quality"
    """The scoring task of a /v1/score request that names none (``qsit serve --task``)."""


class APIError(Exception):
    def __init__(self, status: int, message: str, code: str = "invalid_request"):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


def decode_image_ref(ref: str, assessor, config: ServerConfig):
    """A ``data:`` URL or an allowed local path → a loaded image; anything else is a 400."""
    if not isinstance(ref, str) or not ref:
        raise APIError(400, "image must be a non-empty string (a data: URL or an allowed local path)")
    try:
        if ref.startswith("data:"):
            header, sep, payload = ref.partition(",")
            if not sep or ";base64" not in header:
                raise APIError(400, "image data URL must look like data:image/png;base64,<data>")
            try:
                data = base64.b64decode(payload, validate=True)
            except (binascii.Error, ValueError):
                raise APIError(400, "image data URL is not valid base64") from None
            return assessor.load(data, name="upload")
        if ref.startswith(("http://", "https://")):
            raise APIError(400, "remote image URLs are not fetched; send the image as a data: URL")
        if config.allow_local_dir is None:
            raise APIError(400, "local image paths are not allowed on this server; send a data: URL")
        path = Path(ref.removeprefix("file://")).resolve()
        root = Path(config.allow_local_dir).resolve()
        if root != path and root not in path.parents:
            raise APIError(403, f"local images must be under {root}")
        return assessor.load(path)
    except ImageLoadError as e:
        raise APIError(400, str(e), "bad_image") from None


class ScoreBatcher:
    """Merges concurrent /v1/score requests into one ``Assessor.score`` call per task."""

    def __init__(self, assessor, run_model, max_batch: int, wait_s: float):
        self.assessor, self.run_model = assessor, run_model
        self.max_batch, self.wait_s = max_batch, wait_s
        self.queue: asyncio.Queue = asyncio.Queue()
        self.batch_sizes: list[int] = []  # images per forward pass, for monitoring and tests
        self.received = 0  # requests submitted so far

    async def submit(self, images: list, task: str) -> list:
        fut = asyncio.get_running_loop().create_future()
        self.received += 1
        await self.queue.put((images, task, fut))
        return await fut

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            pending = [await self.queue.get()]
            deadline = loop.time() + self.wait_s
            while sum(len(p[0]) for p in pending) < self.max_batch:
                if not self.queue.empty():  # whatever is already waiting joins this pass
                    pending.append(self.queue.get_nowait())
                    continue
                timeout = deadline - loop.time()
                if timeout <= 0:
                    break
                try:
                    pending.append(await asyncio.wait_for(self.queue.get(), timeout))
                except asyncio.TimeoutError:
                    break
            for task in {p[1] for p in pending}:
                group = [p for p in pending if p[1] == task]
                images = [im for p in group for im in p[0]]
                try:
                    results = await loop.run_in_executor(None, self.run_model, self.assessor.score, images, task,
                                                         self.max_batch)
                except Exception as e:  # every waiting request gets the error, the batcher lives on
                    for _, _, fut in group:
                        if not fut.done():
                            fut.set_exception(e)
                    continue
                self.batch_sizes.append(len(images))
                i = 0
                for imgs, _, fut in group:
                    if not fut.done():
                        fut.set_result(results[i:i + len(imgs)])
                    i += len(imgs)


@dataclass
class _State:
    lock: threading.Lock = field(default_factory=threading.Lock)
    """One model call at a time: scoring batches and generation share the weights."""


def _chat_inputs(body: dict, assessor, config: ServerConfig) -> tuple[object, list[dict]]:
    """The image and the text history (role/content) from an OpenAI chat request."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise APIError(400, "messages must be a non-empty list")
    image, history = None, []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant"):
            raise APIError(400, f"messages[{i}] needs a role of system, user or assistant")
        content = m.get("content")
        texts = []
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            for part in content:
                kind = part.get("type") if isinstance(part, dict) else None
                if kind == "text":
                    texts.append(str(part.get("text", "")))
                elif kind == "image_url":
                    url = part.get("image_url")
                    url = url.get("url") if isinstance(url, dict) else url
                    if image is not None:
                        raise APIError(400, "one image per conversation: qsit assesses a single image")
                    image = decode_image_ref(url, assessor, config)
                else:
                    raise APIError(400, f"messages[{i}] has a content part of unsupported type {kind!r}")
        else:
            raise APIError(400, f"messages[{i}].content must be a string or a list of parts")
        if m["role"] != "system":  # the model's own chat template has no system turn in training
            history.append({"role": m["role"], "content": "\n".join(t for t in texts if t).strip() or "?"})
    if image is None:
        raise APIError(400, "no image in the request: add an image_url content part (a data: URL)")
    if not history or history[-1]["role"] != "user":
        raise APIError(400, "the last message must be from the user")
    return image, history


def create_app(assessor, config: ServerConfig | None = None) -> FastAPI:
    config = config or ServerConfig()
    state = _State()
    executor = ThreadPoolExecutor(max_workers=2)

    def run_model(fn, *args, **kwargs):
        with state.lock:
            return fn(*args, **kwargs)

    batcher = ScoreBatcher(assessor, run_model, config.max_batch, config.batch_wait_s)

    @asynccontextmanager
    async def lifespan(app):
        asyncio.get_running_loop().set_default_executor(executor)
        worker = asyncio.create_task(batcher.run())
        yield
        worker.cancel()

    app = FastAPI(title="qsit", lifespan=lifespan)
    app.state.batcher = batcher
    app.state.model_lock = state.lock  # held while the model runs

    def error(status: int, message: str, code: str):
        kind = "authentication_error" if status == 401 else "invalid_request_error" if status < 500 else "server_error"
        return JSONResponse({"error": {"message": message, "type": kind, "code": code}}, status_code=status)

    @app.exception_handler(APIError)
    async def _api_error(request, exc: APIError):
        return error(exc.status, exc.message, exc.code)

    @app.exception_handler(RequestValidationError)
    async def _validation(request, exc):
        return error(400, f"malformed request: {exc.errors()[:1]}", "malformed_request")

    @app.middleware("http")
    async def guard(request: Request, call_next):
        if request.url.path.startswith("/v1/"):
            if config.api_key:
                given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
                if not hmac.compare_digest(given.encode(), config.api_key.encode()):
                    return error(401, "missing or wrong API key (Authorization: Bearer KEY)", "invalid_api_key")
            length = request.headers.get("content-length")
            if length is not None and length.isdigit() and int(length) > config.max_request_bytes:
                return error(413, f"request body over {config.max_request_bytes} bytes", "request_too_large")
        return await call_next(request)

    async def json_body(request: Request) -> dict:
        raw = await request.body()
        if len(raw) > config.max_request_bytes:  # also when no Content-Length was sent
            raise APIError(413, f"request body over {config.max_request_bytes} bytes", "request_too_large")
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise APIError(400, "request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise APIError(400, "request body must be a JSON object")
        return body

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": assessor.model_id, "device": str(assessor.device)}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": assessor.model_id, "object": "model", "owned_by": "qsit"}]}

    @app.post("/v1/score")
    async def score(request: Request):
        body = await json_body(request)
        refs = body.get("images", [body["image"]] if "image" in body else None)
        if not isinstance(refs, list) or not refs:
            raise APIError(400, "give 'image' or a non-empty list 'images' (data: URLs)")
        if len(refs) > config.max_images_per_request:
            raise APIError(400, f"at most {config.max_images_per_request} images per request")
        task = body.get("task", config.default_task)
        if task not in assessor.preset.tasks:
            raise APIError(400, f"unknown task {task!r}; this model's prompts have {', '.join(assessor.preset.tasks)}")
        images = [decode_image_ref(r, assessor, config) for r in refs]
        results = await batcher.submit(images, task)
        return {"model": assessor.model_id, "prompt_version": assessor.preset.version, "task": task,
                "results": [r.to_dict() for r in results]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await json_body(request)
        image, history = _chat_inputs(body, assessor, config)
        max_new = min(int(body.get("max_tokens") or body.get("max_completion_tokens") or 256),
                      config.max_new_tokens)
        temperature = float(body.get("temperature") or 0.0)
        gen = {"do_sample": True, "temperature": temperature} if temperature > 0 else {}
        rid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())

        def chunk(delta: dict, finish: str | None = None) -> str:
            return "data: " + json.dumps({"id": rid, "object": "chat.completion.chunk", "created": created,
                                          "model": assessor.model_id, "choices": [
                                              {"index": 0, "delta": delta, "finish_reason": finish}]}) + "\n\n"

        if body.get("stream"):
            def events():
                with state.lock:
                    yield chunk({"role": "assistant", "content": ""})
                    pieces = assessor.stream_chat(image, history, max_new_tokens=max_new, **gen)
                    while True:
                        try:
                            piece = next(pieces)
                        except StopIteration as end:  # the generator's return value: why it stopped
                            finish = end.value
                            break
                        yield chunk({"content": piece})
                yield chunk({}, finish)
                yield "data: [DONE]\n\n"

            return StreamingResponse(events(), media_type="text/event-stream")

        reply = await asyncio.get_running_loop().run_in_executor(
            None, lambda: run_model(assessor.reply, image, history, max_new_tokens=max_new, **gen))
        return {"id": rid, "object": "chat.completion", "created": created, "model": assessor.model_id,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": reply.text},
                             "finish_reason": reply.finish_reason}]}

    return app


def is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")


def serve(assessor, config: ServerConfig) -> None:
    import uvicorn

    uvicorn.run(create_app(assessor, config), host=config.host, port=config.port, log_level="info")
