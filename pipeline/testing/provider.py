"""A fake LLM provider: a real HTTP server on 127.0.0.1 that speaks OpenAI and Anthropic.

It answers `POST /v1/chat/completions` (OpenAI Chat Completions) and `POST /v1/messages`
(Anthropic Messages) deterministically, as answers.py describes, so a test can check that no task
ever receives another task's output. A semantic-cache verification (`{"pairs": {"1": [a, b],
...}}`, see pipeline/cache/verdicts.py) is answered with `FakeProvider.verdict` for every pair:
"yes" after a reset, or a function of the pair's two texts. The batch APIs are in batches.py.

Faults (faults.py) are queued on demand, in-process with `FakeProvider.add_faults(...)` or from
any process over the control API (no auth): `POST /_control/faults` (a spec or a list),
`POST /_control/reset`, `POST /_control/rate_limit` (`{"rpm": int | {model: int} | null,
"window_s": 60}`), `GET /_control/stats` (`?bodies=0` leaves out request bodies),
`GET /_control/health`.

While a request limit applies to a model, its answers carry the limit headers the real APIs send
(`x-ratelimit-*-requests` for OpenAI, `anthropic-ratelimit-requests-*` for Anthropic).

Provider latency: `latency_s` per answer plus `latency_per_token_s` per output token, on every
successful answer.

Run it with `with FakeProvider() as fake: ...` or `python -m pipeline.testing --port 8089`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

from pipeline.testing.answers import (
    estimate_tokens,
    last_user_text,
    packed_answer,
    packed_items,
    plain_answer,
    verify_pairs,
)
from pipeline.testing.batches import FakeBatchAPI
from pipeline.testing.faults import DELAY_KINDS, STATUS_KINDS, Fault
from pipeline.testing.http import FakeServer, Response, json_response
from pipeline.testing.limits import RequestLimit
from pipeline.testing.usage import PromptCache
from pipeline.testing.wire import chat_response, error_response, request_problem

FAKE_KEY = "test-key"  # the API key the fake accepts unless told another
PATHS = {"/v1/chat/completions": "openai", "/v1/messages": "anthropic"}


class FakeProvider(FakeServer):
    """The fake provider server, run in a background thread with its own event loop.

    `rate_limit_rpm` is either one limit for all requests together or a limit per model; over it
    the server answers 429 with Retry-After until the current `window_s` window ends. OpenAI's
    cached prompt tokens and Anthropic's cache reads/writes are simulated for a system prompt
    of at least `cache_min_tokens` that was seen before (Anthropic: only with `cache_control`).
    """

    def __init__(
        self,
        *,
        key: str = FAKE_KEY,
        port: int = 0,
        rate_limit_rpm: int | dict[str, int] | None = None,
        window_s: float = 60.0,
        cache_min_tokens: int = 1024,
        latency_s: float = 0.0,
        latency_per_token_s: float = 0.0,
    ) -> None:
        super().__init__(port)
        self.key = key
        # every answer waits latency_s + latency_per_token_s per output token, as a real model does
        self.latency_s = latency_s
        self.latency_per_token_s = latency_per_token_s
        self._initial_rate_limit = (rate_limit_rpm, window_s)
        self.cache_min_tokens = cache_min_tokens
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._generation = 0
        self.reset()

    # ---- public API -------------------------------------------------------------------------

    @property
    def openai_base_url(self) -> str:
        return f"{self.url}/v1"

    @property
    def anthropic_base_url(self) -> str:
        """Anthropic SDKs take the root and add `/v1/messages` themselves."""
        return self.url

    @property
    def rate_limit_rpm(self) -> int | dict[str, int] | None:
        return self._limit.rpm

    @property
    def window_s(self) -> float:
        return self._limit.window_s

    def add_faults(self, *specs: dict[str, Any] | Fault) -> None:
        """Queue faults; the first queued fault matching a request is the one it hits."""
        faults = [Fault.from_spec(s) for s in specs]
        with self._lock:
            self._faults.extend(faults)

    def set_rate_limit(self, rpm: int | dict[str, int] | None, window_s: float = 60.0) -> None:
        """Replace the requests-per-window limit (None: no limit)."""
        self._limit.change(rpm, window_s)

    def reset(self) -> None:
        """Back to the state at construction: no faults, counters, caches, or rate-limit change."""
        with self._lock:
            self._limit = RequestLimit(*self._initial_rate_limit)
            self._prompt_cache = PromptCache(self.cache_min_tokens)
            # A delayed answer to a request from before the reset must not count after it.
            self._generation += 1
            self._faults: list[Fault] = []
            # the answer to a semantic-cache verification pair, or a function of its two texts
            self.verdict: str | Callable[[str, str], str] = "yes"
            self._requests = 0
            self._items = 0
            self._items_answered = 0
            self._by_path: Counter[str] = Counter()
            self._by_model: Counter[str] = Counter()
            self._by_status: Counter[str] = Counter()
            self._fired: Counter[str] = Counter()
            self._windows: Counter[float] = Counter()
            self._bodies: list[Any] = []
            self.batch_api = FakeBatchAPI(self)

    def stats(self, *, bodies: bool = True) -> dict[str, Any]:
        """Counters since the last reset; the same dict `GET /_control/stats` returns."""
        with self._lock:
            out: dict[str, Any] = {
                "requests": self._requests,
                "by_path": dict(self._by_path),
                "by_model": dict(self._by_model),
                "by_status": dict(self._by_status),
                "unauthorized": self._by_status.get("401", 0),
                "rate_limited": self._limit.limited,
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

    async def chat(self, path: str, headers: dict[str, str], body: bytes) -> Response:
        """Answer one chat request, `path` "openai" or "anthropic", as the HTTP endpoint does
        (the batch APIs answer each of their requests through it)."""
        now = time.time()
        req: dict[str, Any] | None = None
        with contextlib.suppress(ValueError):
            doc = json.loads(body)
            req = doc if isinstance(doc, dict) else None
        model = str(req.get("model", "")) if req else ""
        messages = req.get("messages") if req else None
        last_user = last_user_text(messages)
        packed = packed_items(last_user)
        with self._lock:
            generation = self._generation
            self._requests += 1
            self._by_path[path] += 1
            self._by_model[model] += 1
            self._windows[now - now % self.window_s] += 1
            self._items += len(packed[0]) if packed is not None else 1
            self._bodies.append(req if req is not None else body.decode("utf-8", "replace"))

        status, extra, fault = self._admit(path, headers, req, model, packed is not None, now)
        if status != 200 or req is None or not isinstance(messages, list):
            return self._error(path, status, model, **extra)
        if fault and fault.kind in DELAY_KINDS:
            await asyncio.sleep(fault.wait_s)
        content, finished = self._content(req, last_user, packed, fault.kind if fault else None)
        usage = self._prompt_cache.usage(path, req, model, messages)
        usage["output"] = estimate_tokens(content)
        if self.latency_s or self.latency_per_token_s:
            await asyncio.sleep(self.latency_s + self.latency_per_token_s * usage["output"])
        with self._lock:
            if generation == self._generation:
                self._by_status["200"] += 1
                self._items_answered += len(packed[0]) if packed is not None else 1
        response = chat_response(path, next(self._ids), model, content, finished, usage)
        response[1].update(self._limit.headers(path, model, now))
        return response

    # ---- answering ----------------------------------------------------------------------------

    def _content(
        self,
        req: dict[str, Any],
        last_user: str,
        packed: tuple[list[dict[str, Any]], bool] | None,
        kind: str | None,
    ) -> tuple[str, bool]:
        """The answer's text and whether it finished (False: cut at the length limit)."""
        if kind == "malformed":
            content = "Sorry, I cannot help with that request."
        elif (pairs := verify_pairs(last_user)) is not None:
            content = json.dumps({n: self._verdict(pair) for n, pair in pairs.items()})
        elif packed is not None:
            content = packed_answer(packed[0], packed[1], kind)
        else:
            content = plain_answer(last_user, kind)
        finished = True
        if kind == "truncated":
            content, finished = content[: max(1, len(content) // 2)], False
        limit = req.get("max_completion_tokens") or req.get("max_tokens")
        if isinstance(limit, int) and estimate_tokens(content) > limit:
            content = content.encode()[: max(0, limit) * 4].decode("utf-8", "ignore")
            finished = False
        return content, finished

    def _verdict(self, pair: Any) -> str:
        if callable(self.verdict) and isinstance(pair, list) and len(pair) == 2:
            return self.verdict(str(pair[0]), str(pair[1]))
        return self.verdict if isinstance(self.verdict, str) else "no"

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
            message = "Incorrect API key provided." if key else "Missing API key."
            return 401, {"message": message}, None
        problem = request_problem(path, headers, req)
        if problem:
            return 400, {"message": problem}, None
        with self._lock:
            refused = self._limit.admit(model, now)
            if refused is not None:
                return 429, {"retry_after": refused[0], "limit": refused[1]}, None
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

    def _error(self, path: str, status: int, model: str, **extra: Any) -> Response:
        with self._lock:
            self._by_status[str(status)] += 1
        return error_response(path, status, model, **extra)

    # ---- HTTP -------------------------------------------------------------------------------

    async def dispatch(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> Response:
        split = urlsplit(target)
        if self.batch_api.handles(split.path):
            query = parse_qs(split.query)
            return await self.batch_api.dispatch(method, split.path, query, headers, body)
        path = PATHS.get(split.path)
        if path and method == "POST":
            return await self.chat(path, headers, body)
        if split.path.startswith("/_control/"):
            return self._control(method, split.path, parse_qs(split.query), body)
        error = {"message": f"no route {method} {split.path}", "type": "invalid_request_error"}
        return json_response(404, {"error": error})

    def _control(
        self, method: str, path: str, query: dict[str, list[str]], body: bytes
    ) -> Response:
        try:
            doc = json.loads(body) if body else None
            if method == "POST" and path == "/_control/faults":
                specs = doc if isinstance(doc, list) else [doc]
                self.add_faults(*specs)
                return json_response(200, {"queued": len(specs)})
            if method == "POST" and path == "/_control/reset":
                self.reset()
                return json_response(200, {"ok": True})
            if method == "POST" and path == "/_control/rate_limit":
                doc = doc or {}
                self.set_rate_limit(doc.get("rpm"), float(doc.get("window_s", 60.0)))
                return json_response(200, {"ok": True})
            if method == "GET" and path == "/_control/stats":
                return json_response(200, self.stats(bodies=query.get("bodies", ["1"])[0] != "0"))
            if path == "/_control/batches":
                return self.batch_api.control(method, doc)
            if method == "GET" and path == "/_control/health":
                return json_response(200, {"ok": True})
        except (ValueError, TypeError, AttributeError) as exc:
            return json_response(400, {"error": str(exc)})
        return json_response(404, {"error": f"no control route {method} {path}"})
