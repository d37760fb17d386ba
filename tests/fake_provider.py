"""A fake LLM provider: a real HTTP server on 127.0.0.1 that speaks OpenAI and Anthropic.

It answers `POST /v1/chat/completions` (OpenAI Chat Completions) and `POST /v1/messages`
(Anthropic Messages) deterministically: the answer to a prompt `text` is `expected_output(text)`,
and a packed prompt `{"1": input, "2": input, ...}` (the keyed wire format) is answered with
`{"1": expected_output(input), ...}`; the older `{"items": [{"id", "input"}, ...]}` prompt is
answered in its own shape, `{"results": [{"id", "output"}, ...]}`. So a test can check that no
task ever receives another task's output.
A semantic-cache verification (`{"pairs": {"1": [a, b], ...}}`, see pipeline/cache/verdicts.py) is
answered with `FakeProvider.verdict` for every pair: "yes" after a reset, or a function of the
pair's two texts.

Faults are queued on demand, in-process with `FakeProvider.add_faults(...)` or from any process
with `POST /_control/faults`. A fault spec is a dict::

    {"kind": "429", "times": 2, "model": "gpt-4o-mini", "path": "openai", "retry_after": 0.1}

`times` (default 1) is how many matching requests it hits; `model` and `path` ("openai" or
"anthropic") are optional filters. Kinds and their parameters:

    429 (retry_after, default 1.0)   500  503  529  401  400  404 (model not found)
    timeout (delay_s, default 30)    latency (delay_s, default 0.5)
    malformed  truncated  fenced  prose  wrong_output             any request
    bare_array  drop  duplicate_conflict  duplicate_same  reorder  unknown_id   packed only
    results_object (the older `{"results": [...]}` answer to a keyed prompt)   packed only
    degrade (every item after the first gets a wrong answer, as packing drift)  packed only

Every error status may carry `message` to replace the default text. A fault whose kind needs a
packed prompt never matches (nor is used up by) a plain one.

Control API (no auth): `POST /_control/faults` (a spec or a list), `POST /_control/reset`,
`POST /_control/rate_limit` (`{"rpm": int | {model: int} | null, "window_s": 60}`),
`GET /_control/stats` (`?bodies=0` leaves out request bodies), `GET /_control/health`.

While a request limit applies to a model, its answers carry the limit headers the real APIs send
(`x-ratelimit-*-requests` for OpenAI, `anthropic-ratelimit-requests-*` for Anthropic).

Provider latency: `latency_s` (`--latency-ms`) per answer plus `latency_per_token_s`
(`--ms-per-token`) per output token, on every successful answer.

Run it with `with FakeProvider() as fake: ...` or `python -m tests.fake_provider --port 8089`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import itertools
import json
import math
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

from tests.fake_batches import FakeBatchAPI

DEFAULT_KEY = "test-key"
STATUS_KINDS = frozenset({"429", "500", "503", "529", "401", "400", "404"})
DELAY_KINDS = frozenset({"timeout", "latency"})
CONTENT_KINDS = frozenset({"malformed", "truncated", "fenced", "prose", "wrong_output"})
PACKED_KINDS = frozenset(
    {"bare_array", "drop", "duplicate_conflict", "duplicate_same", "reorder", "unknown_id"}
    | {"degrade", "results_object"}
)
FAULT_KINDS = STATUS_KINDS | DELAY_KINDS | CONTENT_KINDS | PACKED_KINDS
PATHS = {"/v1/chat/completions": "openai", "/v1/messages": "anthropic"}

Response = tuple[int, dict[str, str], bytes]


def expected_output(text: str) -> str:
    """The answer the fake gives to a task whose prompt is `text`."""
    return "ans:" + hashlib.sha256(text.encode()).hexdigest()[:16]


def estimate_tokens(text: str) -> int:
    """The fake's token count: a quarter of the UTF-8 length, rounded up."""
    return math.ceil(len(text.encode()) / 4)


@dataclass
class Fault:
    """One queued fault; `times` counts down as matching requests use it."""

    kind: str
    times: int = 1
    model: str | None = None
    path: str | None = None
    retry_after: float = 1.0
    delay_s: float | None = None
    message: str | None = None

    @classmethod
    def from_spec(cls, spec: dict[str, Any] | Fault) -> Fault:
        """Build a fault from a spec dict; raise ValueError on an unknown kind or field."""
        if isinstance(spec, Fault):
            return spec
        spec = dict(spec)
        spec["kind"] = str(spec.get("kind", ""))
        if spec["kind"] not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {spec['kind']!r}; one of {sorted(FAULT_KINDS)}")
        if spec.get("path") not in (None, "openai", "anthropic"):
            raise ValueError(f"fault path must be 'openai' or 'anthropic', not {spec['path']!r}")
        try:
            return cls(**spec)
        except TypeError as exc:
            raise ValueError(f"bad fault spec {spec!r}: {exc}") from None

    def matches(self, path: str, model: str, packed: bool) -> bool:
        return (
            self.times > 0
            and (self.model is None or self.model == model)
            and (self.path is None or self.path == path)
            and (packed or self.kind not in PACKED_KINDS)
        )

    def spec(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


def _text_of(content: Any) -> str:
    """Text of a message content: a string, or a list of OpenAI parts / Anthropic blocks."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def _packed_items(text: str) -> tuple[list[dict[str, Any]], bool] | None:
    """The items of a packed prompt as `{"id", "input"}` entries, and whether the prompt was in
    the keyed format; None when `text` is a plain prompt."""
    if not text.startswith("{"):
        return None
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    if not isinstance(doc, dict) or not doc:
        return None
    if all(k.isdecimal() and isinstance(v, str) for k, v in doc.items()):
        return [{"id": k, "input": v} for k, v in doc.items()], True
    items = doc.get("items")
    if not isinstance(items, list) or not all(
        isinstance(i, dict) and "id" in i and "input" in i for i in items
    ):
        return None
    return items, False


def _verify_pairs(text: str) -> dict[str, Any] | None:
    """The pairs of a semantic-cache verification (`{"pairs": {"1": [a, b], ...}}`), or None."""
    if not text.startswith('{"pairs"'):
        return None
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    pairs = doc.get("pairs") if isinstance(doc, dict) else None
    return pairs if isinstance(pairs, dict) else None


def _input_text(item: dict[str, Any]) -> str:
    value = item["input"]
    return value if isinstance(value, str) else json.dumps(value)


def _unknown_id(ids: list[Any]) -> str:
    taken = {str(i) for i in ids}
    candidate = "999999"
    while candidate in taken:
        candidate += "9"
    return candidate


def _packed_answer(items: list[dict[str, Any]], keyed: bool, kind: str | None) -> str:
    """The JSON content answering packed `items`, in the prompt's format, bent by a content
    fault `kind`."""
    results = [{"id": i["id"], "output": expected_output(_input_text(i))} for i in items]
    if kind == "drop" and results:
        results.pop()
    elif kind in ("duplicate_conflict", "duplicate_same") and results:
        twin = dict(results[0])
        if kind == "duplicate_conflict":
            twin["output"] = expected_output(_input_text(items[0]) + "#conflict")
        results.insert(1, twin)
    elif kind == "reorder":
        results.reverse()
    elif kind == "unknown_id":
        ids = [r["id"] for r in results]
        results.append({"id": _unknown_id(ids), "output": expected_output("unknown")})
    elif kind == "wrong_output" and len(results) >= 2:
        results[0]["output"], results[1]["output"] = results[1]["output"], results[0]["output"]
    elif kind == "wrong_output" and results:
        results[0]["output"] = expected_output(_input_text(items[0]) + "#wrong")
    elif kind == "degrade":
        for result, item in zip(results[1:], items[1:], strict=True):
            result["output"] = expected_output(_input_text(item) + "#degraded")
    if kind == "bare_array":
        return json.dumps(results)
    if keyed and kind != "results_object":  # written by hand: a duplicate id stays in the text
        pairs = (f"{json.dumps(str(r['id']))}: {json.dumps(r['output'])}" for r in results)
        body = "{" + ", ".join(pairs) + "}"
    else:
        body = json.dumps({"results": results})
    if kind == "fenced":
        return f"Sure! Here is the JSON you asked for:\n```json\n{body}\n```\nLet me know."
    if kind == "prose":
        return f"Here are the results: {body} Hope this helps!"
    return body


def _plain_answer(text: str, kind: str | None) -> str:
    answer = expected_output(text + "#wrong" if kind == "wrong_output" else text)
    if kind == "fenced":
        return f"Here you go:\n```\n{answer}\n```\nAnything else?"
    if kind == "prose":
        return f"The answer is: {answer} Hope this helps!"
    return answer


_ERRORS: dict[str, tuple[str, str | None, str, str]] = {
    # status: (openai type, openai code, anthropic type, default message)
    "400": ("invalid_request_error", None, "invalid_request_error", "Invalid request."),
    "401": ("invalid_request_error", "invalid_api_key", "authentication_error", "Invalid API key."),
    "404": ("invalid_request_error", "model_not_found", "not_found_error", ""),
    "429": ("requests", "rate_limit_exceeded", "rate_limit_error", ""),
    "500": ("server_error", None, "api_error", "The server had an error processing your request."),
    "503": ("server_error", None, "api_error", "The engine is currently overloaded."),
    "529": ("server_error", None, "overloaded_error", "Overloaded"),
}


def _reason(status: int) -> str:
    with contextlib.suppress(ValueError):
        return HTTPStatus(status).phrase
    return "Overloaded" if status == 529 else "Unknown"


class FakeProvider:
    """The fake provider server, run in a background thread with its own event loop.

    `rate_limit_rpm` is either one limit for all requests together or a limit per model; over it
    the server answers 429 with Retry-After until the current `window_s` window ends. OpenAI's
    cached prompt tokens and Anthropic's cache reads/writes are simulated for a system prompt
    of at least `cache_min_tokens` that was seen before (Anthropic: only with `cache_control`).
    """

    def __init__(
        self,
        *,
        key: str = DEFAULT_KEY,
        port: int = 0,
        rate_limit_rpm: int | dict[str, int] | None = None,
        window_s: float = 60.0,
        cache_min_tokens: int = 1024,
        latency_s: float = 0.0,
        latency_per_token_s: float = 0.0,
    ) -> None:
        self.key = key
        # every answer waits latency_s + latency_per_token_s per output token, as a real model does
        self.latency_s = latency_s
        self.latency_per_token_s = latency_per_token_s
        self.port = port
        self._initial_rate_limit = (rate_limit_rpm, window_s)
        self.cache_min_tokens = cache_min_tokens
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._faults: list[Fault] = []
        self._conns: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._generation = 0
        self.reset()

    # ---- public API -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def openai_base_url(self) -> str:
        return f"{self.url}/v1"

    @property
    def anthropic_base_url(self) -> str:
        """Anthropic SDKs take the root and add `/v1/messages` themselves."""
        return self.url

    def add_faults(self, *specs: dict[str, Any] | Fault) -> None:
        """Queue faults; the first queued fault matching a request is the one it hits."""
        faults = [Fault.from_spec(s) for s in specs]
        with self._lock:
            self._faults.extend(faults)

    def set_rate_limit(self, rpm: int | dict[str, int] | None, window_s: float = 60.0) -> None:
        """Replace the requests-per-window limit (None: no limit)."""
        with self._lock:
            self.rate_limit_rpm, self.window_s = rpm, window_s
            self._rate_counts.clear()

    def reset(self) -> None:
        """Back to the state at construction: no faults, counters, caches, or rate-limit change."""
        with self._lock:
            self.rate_limit_rpm, self.window_s = self._initial_rate_limit
            # A delayed answer to a request from before the reset must not count after it.
            self._generation += 1
            self._faults = []
            # the answer to a semantic-cache verification pair, or a function of its two texts
            self.verdict: str | Callable[[str, str], str] = "yes"
            self._requests = 0
            self._items = 0
            self._items_answered = 0
            self._rate_limited = 0
            self._by_path: Counter[str] = Counter()
            self._by_model: Counter[str] = Counter()
            self._by_status: Counter[str] = Counter()
            self._fired: Counter[str] = Counter()
            self._windows: Counter[float] = Counter()
            self._rate_counts: Counter[tuple[str, float]] = Counter()
            self._prefixes: set[tuple[str, str, str]] = set()
            self._bodies: list[Any] = []
            self.batch_api = FakeBatchAPI(self)

    def _verdict(self, pair: Any) -> str:
        if callable(self.verdict) and isinstance(pair, list) and len(pair) == 2:
            return self.verdict(str(pair[0]), str(pair[1]))
        return self.verdict if isinstance(self.verdict, str) else "no"

    def stats(self, *, bodies: bool = True) -> dict[str, Any]:
        """Counters since the last reset; the same dict `GET /_control/stats` returns."""
        with self._lock:
            out: dict[str, Any] = {
                "requests": self._requests,
                "by_path": dict(self._by_path),
                "by_model": dict(self._by_model),
                "by_status": dict(self._by_status),
                "unauthorized": self._by_status.get("401", 0),
                "rate_limited": self._rate_limited,
                "items": self._items,
                "items_answered": self._items_answered,
                "window_s": self.window_s,
                "windows": sorted(self._windows.items()),
                "faults_fired": dict(self._fired),
                "faults_pending": [f.spec() for f in self._faults if f.times > 0],
            }
            if bodies:
                out["bodies"] = list(self._bodies)
            return out

    def start(self) -> Self:
        """Start serving in a background thread; returns once the port is bound."""
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._bind())
            except BaseException as exc:  # handed to the starting thread
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._shutdown())
            loop.close()

        self._thread = threading.Thread(target=run, name="fake-provider", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            raise failure[0]
        return self

    def stop(self) -> None:
        """Stop the server and drop its open connections."""
        if self._loop and self._thread:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
        self._loop = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ---- HTTP -------------------------------------------------------------------------------

    async def _bind(self) -> None:
        self._server = await asyncio.start_server(
            self._connection, "127.0.0.1", self.port, backlog=4096, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def _shutdown(self) -> None:
        if self._server:
            self._server.close()
        for task in list(self._conns):
            task.cancel()
        await asyncio.gather(*self._conns, return_exceptions=True)

    async def serve_forever(self) -> None:
        """Serve on the current event loop until cancelled (the `python -m` entry point)."""
        await self._bind()
        assert self._server is not None
        try:
            await self._server.serve_forever()
        finally:
            await self._shutdown()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, target, version = lines[0].split(" ", 2)
                headers: dict[str, str] = {}
                for line in lines[1:]:
                    name, sep, value = line.partition(":")
                    if sep:
                        headers[name.strip().lower()] = value.strip()
                if "chunked" in headers.get("transfer-encoding", "").lower():
                    body = await _read_chunked(reader)
                else:
                    length = int(headers.get("content-length") or 0)
                    body = await reader.readexactly(length) if length else b""
                try:
                    status, extra, payload = await self._dispatch(method, target, headers, body)
                except Exception as exc:  # a fake must answer, not hang
                    status, extra, payload = 500, {}, json.dumps({"error": repr(exc)}).encode()
                connection = headers.get("connection", "").lower()
                close = connection == "close" or (
                    version == "HTTP/1.0" and connection != "keep-alive"
                )
                out = [f"HTTP/1.1 {status} {_reason(status)}\r\ncontent-type: application/json\r\n"]
                out.append(f"content-length: {len(payload)}\r\n")
                out.extend(f"{k}: {v}\r\n" for k, v in extra.items())
                out.append("connection: close\r\n\r\n" if close else "\r\n")
                writer.write("".join(out).encode("latin-1") + payload)
                await writer.drain()
                if close:
                    break
        except (
            asyncio.CancelledError,  # stop(): asyncio would log a cancelled handler as an error
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            ConnectionError,
            ValueError,
        ):
            pass
        finally:
            self._conns.discard(task)
            writer.close()

    async def _dispatch(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> Response:
        split = urlsplit(target)
        if self.batch_api.handles(split.path):  # batch APIs: tests/fake_batches.py
            query = parse_qs(split.query)
            return await self.batch_api.dispatch(method, split.path, query, headers, body)
        path = PATHS.get(split.path)
        if path and method == "POST":
            return await self._provider_call(path, headers, body)
        if split.path.startswith("/_control/"):
            return self._control(method, split.path, parse_qs(split.query), body)
        error = {"message": f"no route {method} {split.path}", "type": "invalid_request_error"}
        return _json(404, {"error": error})

    def _control(
        self, method: str, path: str, query: dict[str, list[str]], body: bytes
    ) -> Response:
        try:
            doc = json.loads(body) if body else None
            if method == "POST" and path == "/_control/faults":
                specs = doc if isinstance(doc, list) else [doc]
                self.add_faults(*specs)
                return _json(200, {"queued": len(specs)})
            if method == "POST" and path == "/_control/reset":
                self.reset()
                return _json(200, {"ok": True})
            if method == "POST" and path == "/_control/rate_limit":
                doc = doc or {}
                self.set_rate_limit(doc.get("rpm"), float(doc.get("window_s", 60.0)))
                return _json(200, {"ok": True})
            if method == "GET" and path == "/_control/stats":
                return _json(200, self.stats(bodies=query.get("bodies", ["1"])[0] != "0"))
            if path == "/_control/batches":
                return self.batch_api.control(method, doc)
            if method == "GET" and path == "/_control/health":
                return _json(200, {"ok": True})
        except (ValueError, TypeError, AttributeError) as exc:
            return _json(400, {"error": str(exc)})
        return _json(404, {"error": f"no control route {method} {path}"})

    # ---- the provider -------------------------------------------------------------------------

    async def _provider_call(self, path: str, headers: dict[str, str], body: bytes) -> Response:
        now = time.time()
        req: dict[str, Any] | None = None
        with contextlib.suppress(ValueError):
            doc = json.loads(body)
            req = doc if isinstance(doc, dict) else None
        model = str(req.get("model", "")) if req else ""
        messages = req.get("messages") if req else None
        last_user = ""
        for m in reversed(messages if isinstance(messages, list) else []):
            if isinstance(m, dict) and m.get("role") == "user":
                last_user = _text_of(m.get("content"))
                break
        packed = _packed_items(last_user)
        items = packed[0] if packed is not None else None
        with self._lock:
            generation = self._generation
            self._requests += 1
            self._by_path[path] += 1
            self._by_model[model] += 1
            self._windows[now - now % self.window_s] += 1
            self._items += len(items) if items is not None else 1
            self._bodies.append(req if req is not None else body.decode("utf-8", "replace"))

        status, extra, fault = self._admit(path, headers, req, model, items is not None, now)
        if status != 200 or req is None or not isinstance(messages, list):
            return self._error(path, status, model, **extra)
        if fault and fault.kind in DELAY_KINDS:
            default = 30.0 if fault.kind == "timeout" else 0.5
            await asyncio.sleep(default if fault.delay_s is None else fault.delay_s)
        kind = fault.kind if fault else None
        if kind == "malformed":
            content = "Sorry, I cannot help with that request."
        elif (pairs := _verify_pairs(last_user)) is not None:
            content = json.dumps({n: self._verdict(pair) for n, pair in pairs.items()})
        elif items is not None:
            content = _packed_answer(items, packed is not None and packed[1], kind)
        else:
            content = _plain_answer(last_user, kind)
        finished = True
        if kind == "truncated":
            content, finished = content[: max(1, len(content) // 2)], False
        limit = req.get("max_completion_tokens") or req.get("max_tokens")
        if isinstance(limit, int) and estimate_tokens(content) > limit:
            content = content.encode()[: max(0, limit) * 4].decode("utf-8", "ignore")
            finished = False

        usage = self._usage(path, req, model, messages)
        usage["output"] = estimate_tokens(content)
        if self.latency_s or self.latency_per_token_s:
            await asyncio.sleep(self.latency_s + self.latency_per_token_s * usage["output"])
        with self._lock:
            if generation == self._generation:
                self._by_status["200"] += 1
                self._items_answered += len(items) if items is not None else 1
        n = next(self._ids)
        limits = self._limit_headers(path, model, now)
        if path == "openai":
            doc = _openai_body(n, model, content, finished, usage)
            return _json(200, doc, {"x-request-id": f"req_fake{n}", **limits})
        doc = _anthropic_body(n, model, content, finished, usage)
        return _json(200, doc, {"request-id": f"req_fake{n}", **limits})

    def _limit_headers(self, path: str, model: str, now: float) -> dict[str, str]:
        """The rate-limit headers the real APIs send, when a request limit applies to `model`."""
        with self._lock:
            limit = self.rate_limit_rpm
            cap = limit.get(model) if isinstance(limit, dict) else limit
            if cap is None:
                return {}
            window = now - now % self.window_s
            used = self._rate_counts[(model if isinstance(limit, dict) else "*", window)]
        remaining, reset_s = max(cap - used, 0), window + self.window_s - now
        if path == "openai":
            return {
                "x-ratelimit-limit-requests": str(cap),
                "x-ratelimit-remaining-requests": str(remaining),
                "x-ratelimit-reset-requests": f"{reset_s:.3f}s",
            }
        reset_at = datetime.fromtimestamp(window + self.window_s, tz=UTC)
        return {
            "anthropic-ratelimit-requests-limit": str(cap),
            "anthropic-ratelimit-requests-remaining": str(remaining),
            "anthropic-ratelimit-requests-reset": reset_at.isoformat(),
        }

    def _admit(
        self,
        path: str,
        headers: dict[str, str],
        req: dict[str, Any] | None,
        model: str,
        packed: bool,
        now: float,
    ) -> tuple[int, dict[str, Any], Fault | None]:
        """Auth, request checks, rate limit, fault queue: (status, error extras, fault hit)."""
        if path == "openai":
            key = headers.get("authorization", "").removeprefix("Bearer ").strip()
        else:
            key = headers.get("x-api-key", "")
        if key != self.key:
            return (
                401,
                {"message": "Incorrect API key provided." if key else "Missing API key."},
                None,
            )
        problem = _request_problem(path, headers, req)
        if problem:
            return 400, {"message": problem}, None
        with self._lock:
            limit = self.rate_limit_rpm
            cap = limit.get(model) if isinstance(limit, dict) else limit
            if cap is not None:
                window = now - now % self.window_s
                bucket = (model if isinstance(limit, dict) else "*", window)
                if self._rate_counts[bucket] >= cap:
                    self._rate_limited += 1
                    wait_s = round(window + self.window_s - now, 3)
                    return 429, {"retry_after": max(wait_s, 0.001), "limit": cap}, None
                self._rate_counts[bucket] += 1
            for fault in self._faults:
                if fault.matches(path, model, packed):
                    fault.times -= 1
                    self._fired[fault.kind] += 1
                    if fault.kind not in STATUS_KINDS:
                        return 200, {}, fault
                    extra: dict[str, Any] = {"retry_after": fault.retry_after}
                    if fault.message:
                        extra["message"] = fault.message
                    return int(fault.kind), extra, fault
        return 200, {}, None

    def _usage(
        self, path: str, req: dict[str, Any], model: str, messages: list[Any]
    ) -> dict[str, int]:
        """Prompt token counts, with the simulated prompt cache for a repeated system prompt."""
        texts = [_text_of(m.get("content")) for m in messages if isinstance(m, dict)]
        prefix = ""
        if path == "openai":
            prefix = "".join(
                _text_of(m.get("content"))
                for m in itertools.takewhile(
                    lambda m: isinstance(m, dict) and m.get("role") in ("system", "developer"),
                    messages,
                )
            )
            total = estimate_tokens("".join(texts))
        else:
            system = req.get("system")
            blocks = (
                [{"text": system}]
                if isinstance(system, str)
                else system
                if isinstance(system, list)
                else []
            )
            marked = [
                i for i, b in enumerate(blocks) if isinstance(b, dict) and b.get("cache_control")
            ]
            if marked:
                prefix = _text_of(blocks[: marked[-1] + 1])
            total = estimate_tokens(_text_of(blocks) + "".join(texts))
        prefix_tokens = estimate_tokens(prefix)
        read = write = 0
        if prefix and prefix_tokens >= self.cache_min_tokens:
            key = (path, model, hashlib.sha256(prefix.encode()).hexdigest())
            with self._lock:
                if key in self._prefixes:
                    read = prefix_tokens
                else:
                    self._prefixes.add(key)
                    write = prefix_tokens if path == "anthropic" else 0
        return {"total": total, "read": read, "write": write}

    def _error(
        self,
        path: str,
        status: int,
        model: str,
        *,
        message: str | None = None,
        retry_after: float = 1.0,
        limit: int | None = None,
    ) -> Response:
        """An error response shaped like the protocol's own."""
        openai_type, code, anthropic_type, text = _ERRORS.get(str(status), _ERRORS["400"])
        headers: dict[str, str] = {}
        if status == 429:
            wait = f"{retry_after:g}"
            headers = {"retry-after": wait, "retry-after-ms": str(round(retry_after * 1000))}
            text = (
                f"Rate limit reached for {model} in organization org-fake on requests per min "
                f"(RPM): Limit {limit or 1}, Used {limit or 1}, Requested 1. "
                if path == "openai"
                else "This request would exceed your organization's rate limit. "
            ) + f"Please try again in {wait}s."
        elif status == 404:
            text = f"The model `{model}` does not exist or you do not have access to it."
        text = message or text
        with self._lock:
            self._by_status[str(status)] += 1
        if path == "openai":
            body: dict[str, Any] = {
                "error": {"message": text, "type": openai_type, "param": None, "code": code}
            }
        else:
            body = {"type": "error", "error": {"type": anthropic_type, "message": text}}
        return _json(status, body, headers)


def _request_problem(path: str, headers: dict[str, str], req: dict[str, Any] | None) -> str:
    """What a real provider would answer 400 for, or "" when the request is well formed."""
    if req is None:
        return "We could not parse the JSON body of your request."
    if not req.get("model"):
        return (
            "model: Field required" if path == "anthropic" else "you must provide a model parameter"
        )
    if not isinstance(req.get("messages"), list):
        return (
            "messages: Field required"
            if path == "anthropic"
            else "'messages' is a required property"
        )
    if path == "anthropic" and "anthropic-version" not in headers:
        return "anthropic-version: header is required"
    if path == "anthropic" and not isinstance(req.get("max_tokens"), int):
        return "max_tokens: Field required"
    return ""


def _openai_body(
    n: int, model: str, content: str, finished: bool, usage: dict[str, int]
) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-fake{n:08d}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": None},
                "logprobs": None,
                "finish_reason": "stop" if finished else "length",
            }
        ],
        "usage": {
            "prompt_tokens": usage["total"],
            "completion_tokens": usage["output"],
            "total_tokens": usage["total"] + usage["output"],
            "prompt_tokens_details": {"cached_tokens": usage["read"], "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
        },
        "system_fingerprint": "fp_fake",
    }


def _anthropic_body(
    n: int, model: str, content: str, finished: bool, usage: dict[str, int]
) -> dict[str, Any]:
    return {
        "id": f"msg_fake{n:08d}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": content}],
        "stop_reason": "end_turn" if finished else "max_tokens",
        "stop_sequence": None,
        "usage": {
            # Anthropic counts cache reads and writes outside input_tokens.
            "input_tokens": usage["total"] - usage["read"] - usage["write"],
            "output_tokens": usage["output"],
            "cache_creation_input_tokens": usage["write"],
            "cache_read_input_tokens": usage["read"],
        },
    }


def _json(status: int, doc: Any, headers: dict[str, str] | None = None) -> Response:
    return status, headers or {}, json.dumps(doc).encode()


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)


def main(argv: list[str] | None = None) -> None:
    """`python -m tests.fake_provider --port N [--key K] [--rpm N] [--window-s S]`."""
    parser = argparse.ArgumentParser(description="Fake OpenAI/Anthropic provider for tests.")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--key", default=DEFAULT_KEY, help="the accepted API key")
    parser.add_argument("--rpm", type=int, default=None, help="requests per window, all models")
    parser.add_argument("--window-s", type=float, default=60.0, help="rate-limit window")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="fixed time per answer")
    parser.add_argument(
        "--ms-per-token", type=float, default=0.0, help="added time per output token"
    )
    args = parser.parse_args(argv)
    fake = FakeProvider(
        key=args.key,
        port=args.port,
        rate_limit_rpm=args.rpm,
        window_s=args.window_s,
        latency_s=args.latency_ms / 1000,
        latency_per_token_s=args.ms_per_token / 1000,
    )

    async def run() -> None:
        task = asyncio.create_task(fake.serve_forever())
        while fake._server is None and not task.done():
            await asyncio.sleep(0.01)
        print(f"fake provider listening on {fake.url}", flush=True)
        await task

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())


if __name__ == "__main__":
    main()
