"""Provider batch APIs: OpenAI Batch (`/v1/files` + `/v1/batches`) and Anthropic Message Batches.

Both take many requests at once and answer within 24 hours at half the price. A client here turns
`(custom_id, ChatRequest)` pairs into the provider's request entries, submits them as one provider
batch, reports its state, and reads its results back as `BatchOutcome`s keyed by `custom_id` (the
provider may return them in any order). Errors are classified like synchronous calls
(`classify_http`) and never carry an API key.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

import httpx
import orjson

from pipeline.config.records import ProviderConfig
from pipeline.costs.usage import from_anthropic, from_openai
from pipeline.errors import TransientError
from pipeline.providers.base import ChatRequest, ChatResponse, classify_http
from pipeline.providers.openai import OpenAICompatible
from pipeline.redaction import redact

BatchState = Literal["in_progress", "ended", "failed"]
OPENAI_TERMINAL = {"completed", "expired", "cancelled", "failed"}
ANTHROPIC_VERSION = "2023-06-01"
CLOCK_SKEW_S = 120  # the provider's clock against ours, when matching a lost batch by time


@dataclass(frozen=True)
class BatchStatus:
    """Where a provider batch is. `ended` means its results (if any) can be read."""

    state: BatchState
    detail: str
    ended_at: float | None = None
    created_at: float | None = None


@dataclass(frozen=True)
class BatchOutcome:
    """One request's result: an answer, or an error code (`expired`, `cancelled`, ...)."""

    custom_id: str
    response: ChatResponse | None = None
    error_code: str = ""
    error_message: str = ""


class BatchProvider(Protocol):
    """A provider batch API."""

    name: str
    max_requests: int
    max_bytes: int

    def entry(self, custom_id: str, request: ChatRequest) -> bytes: ...

    async def submit(self, entries: Sequence[bytes], *, tag: str) -> str: ...

    async def find(self, tag: str, *, created_ms: int, requests: int) -> list[str]:
        """Provider batches that may be the one created for submission `tag` (recorded at
        `created_ms` with `requests` requests) when a crash hid its id from us; best first."""
        ...

    async def status(self, batch_id: str) -> BatchStatus: ...

    async def results(self, batch_id: str) -> list[BatchOutcome]: ...

    async def aclose(self) -> None: ...


class _HTTPBatches:
    """Shared HTTP plumbing: one pooled client, transport errors as `TransientError`."""

    def __init__(
        self,
        config: ProviderConfig,
        base_url: str,
        headers: dict[str, str],
        transport: httpx.AsyncBaseTransport | None,
    ) -> None:
        self.name = config.name
        self.config = config
        self._key = config.api_key.get_secret_value()
        self._client = httpx.AsyncClient(
            base_url=base_url,
            headers=headers,
            timeout=httpx.Timeout(config.read_timeout_s, connect=config.connect_timeout_s),
            transport=transport,
        )

    async def _request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self._client.request(method, url, **kwargs)
        except httpx.TimeoutException:
            raise TransientError(f"{method} {url} timed out", provider=self.name) from None
        except httpx.TransportError as exc:
            message = redact(f"connection failed: {type(exc).__name__}", [self._key])
            raise TransientError(message, provider=self.name) from None
        if response.status_code >= 400:
            message, code = response.reason_phrase, ""
            try:
                err = orjson.loads(response.content).get("error") or {}
                message = str(err.get("message") or message)
                code = str(err.get("code") or err.get("type") or "")
            except (orjson.JSONDecodeError, AttributeError):
                pass
            message = redact(f"{method} {url}: {message}", [self._key])
            raise classify_http(self.name, response.status_code, message, code, response.headers)
        return response

    async def _json(self, method: str, url: str, **kwargs: Any) -> dict[str, Any]:
        response = await self._request(method, url, **kwargs)
        try:
            doc = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise TransientError(
                f"{method} {url}: answer is not JSON", provider=self.name
            ) from None
        if not isinstance(doc, dict):
            raise TransientError(f"{method} {url}: answer is not an object", provider=self.name)
        return doc

    async def aclose(self) -> None:
        await self._client.aclose()


def _lines(content: bytes) -> list[dict[str, Any]]:
    out = []
    for raw in content.splitlines():
        if raw.strip():
            doc = orjson.loads(raw)
            if isinstance(doc, dict):
                out.append(doc)
    return out


class OpenAIBatches(_HTTPBatches):
    """OpenAI Batch API: a JSONL file of `/v1/chat/completions` requests, 24 h window.

    Limits: 50,000 requests and 200 MB per input file, one model per file.
    """

    max_requests = 50_000
    max_bytes = 200 * 1024 * 1024

    def __init__(
        self, config: ProviderConfig, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        key = config.api_key.get_secret_value()
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        super().__init__(config, config.base_url.rstrip("/"), headers, transport)
        self._chat = OpenAICompatible(config, transport=transport)

    def entry(self, custom_id: str, request: ChatRequest) -> bytes:
        line = {
            "custom_id": custom_id,
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": self._chat.body(request),
        }
        return orjson.dumps(line)

    async def submit(self, entries: Sequence[bytes], *, tag: str) -> str:
        content = b"\n".join(entries) + b"\n"
        uploaded = await self._json(
            "POST",
            "/files",
            data={"purpose": "batch"},
            files={"file": (f"batchwise-{tag}.jsonl", content, "application/jsonl")},
        )
        created = await self._json(
            "POST",
            "/batches",
            json={
                "input_file_id": uploaded["id"],
                "endpoint": "/v1/chat/completions",
                "completion_window": "24h",
                "metadata": {"batchwise": tag},
            },
        )
        return str(created["id"])

    async def find(self, tag: str, *, created_ms: int, requests: int) -> list[str]:
        """The provider batch tagged with `tag` in its metadata: an exact match."""
        doc = await self._json("GET", "/batches", params={"limit": 100})
        for batch in doc.get("data") or []:
            if (batch.get("metadata") or {}).get("batchwise") == tag:
                return [str(batch["id"])]
        return []

    async def status(self, batch_id: str) -> BatchStatus:
        doc = await self._json("GET", f"/batches/{batch_id}")
        state = str(doc.get("status", ""))
        counts = doc.get("request_counts") or {}
        detail = f"{state} {counts.get('completed', 0)}/{counts.get('total', 0)}"
        ended: BatchState = "in_progress"
        if state == "failed":
            ended = "failed"
            errors = (doc.get("errors") or {}).get("data") or []
            if errors:
                detail += ": " + "; ".join(str(e.get("message", "")) for e in errors[:3])
        elif state in OPENAI_TERMINAL:
            ended = "ended"
        finished = doc.get("completed_at") or doc.get("expired_at") or doc.get("cancelled_at")
        return BatchStatus(
            ended,
            detail,
            ended_at=float(finished) if finished else None,
            created_at=float(doc["created_at"]) if doc.get("created_at") else None,
        )

    async def results(self, batch_id: str) -> list[BatchOutcome]:
        doc = await self._json("GET", f"/batches/{batch_id}")
        outcomes: list[BatchOutcome] = []
        for field in ("output_file_id", "error_file_id"):
            file_id = doc.get(field)
            if not file_id:
                continue
            content = (await self._request("GET", f"/files/{file_id}/content")).content
            outcomes += [self._outcome(line) for line in _lines(content)]
        return outcomes

    def _outcome(self, line: dict[str, Any]) -> BatchOutcome:
        custom_id = str(line.get("custom_id", ""))
        error = line.get("error")
        response = line.get("response") or {}
        status = int(response.get("status_code") or 0)
        body = response.get("body") or {}
        if error:
            code = str(error.get("code") or "error")
            return BatchOutcome(custom_id, error_code=code, error_message=str(error.get("message")))
        if status != 200:
            err = body.get("error") or {} if isinstance(body, dict) else {}
            message = redact(str(err.get("message") or f"HTTP {status}"), [self._key])
            return BatchOutcome(custom_id, error_code=f"http_{status}", error_message=message)
        try:
            choice = body["choices"][0]
            text = choice["message"].get("content") or ""
        except (KeyError, IndexError, TypeError):
            return BatchOutcome(custom_id, error_code="malformed", error_message="no completion")
        answer = ChatResponse(
            text=text,
            usage=from_openai(body.get("usage") or {}),
            truncated=choice.get("finish_reason") == "length",
            provider=self.name,
            model=str(body.get("model", "")),
            latency_ms=0,
        )
        return BatchOutcome(custom_id, response=answer)

    async def aclose(self) -> None:
        await self._chat.aclose()
        await super().aclose()


class AnthropicBatches(_HTTPBatches):
    """Anthropic Message Batches: `custom_id` + Messages `params`, 24 h window.

    Limits: 100,000 requests and 256 MB per batch; custom ids match `^[a-zA-Z0-9_-]{1,64}$`.
    """

    max_requests = 100_000
    max_bytes = 256 * 1024 * 1024

    def __init__(
        self, config: ProviderConfig, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        key = config.api_key.get_secret_value()
        base = (config.base_url or "https://api.anthropic.com").rstrip("/")
        base = base if base.endswith("/v1") else f"{base}/v1"
        headers = {"x-api-key": key, "anthropic-version": ANTHROPIC_VERSION}
        super().__init__(config, base, headers, transport)

    def entry(self, custom_id: str, request: ChatRequest) -> bytes:
        params: dict[str, Any] = {
            "model": request.model,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
        }
        if request.system:
            params["system"] = request.system
        return orjson.dumps({"custom_id": custom_id, "params": params})

    async def submit(self, entries: Sequence[bytes], *, tag: str) -> str:
        body = b'{"requests":[' + b",".join(entries) + b"]}"
        created = await self._json(
            "POST",
            "/messages/batches",
            content=body,
            headers={"content-type": "application/json"},
        )
        return str(created["id"])

    async def find(self, tag: str, *, created_ms: int, requests: int) -> list[str]:
        """Message Batches carry no metadata, so a lost batch is recognised by when it was made
        and its size: created no earlier than the submission's intent (less clock skew) and
        holding exactly `requests` requests. Pages from the newest back to the intent's time.
        The caller adopts a candidate no other submission owns; the results are joined on
        custom_id, so a wrong guess can only send requests back to the synchronous route."""
        since_s = created_ms / 1000 - CLOCK_SKEW_S
        found: list[str] = []
        params: dict[str, Any] = {"limit": 100}
        while True:
            doc = await self._json("GET", "/messages/batches", params=params)
            page = doc.get("data") or []
            for batch in page:
                made = _iso_seconds(str(batch.get("created_at") or ""))
                if made is not None and made < since_s:
                    return found
                counts = batch.get("request_counts") or {}
                if sum(int(v) for v in counts.values()) == requests:
                    found.append(str(batch["id"]))
            if not doc.get("has_more") or not page:
                return found
            params = {"limit": 100, "after_id": page[-1]["id"]}

    async def status(self, batch_id: str) -> BatchStatus:
        doc = await self._json("GET", f"/messages/batches/{batch_id}")
        state = str(doc.get("processing_status", ""))
        counts = doc.get("request_counts") or {}
        detail = state + " " + " ".join(f"{k}={v}" for k, v in sorted(counts.items()))
        return BatchStatus("ended" if state == "ended" else "in_progress", detail)

    async def results(self, batch_id: str) -> list[BatchOutcome]:
        content = (await self._request("GET", f"/messages/batches/{batch_id}/results")).content
        return [self._outcome(line) for line in _lines(content)]

    def _outcome(self, line: dict[str, Any]) -> BatchOutcome:
        custom_id = str(line.get("custom_id", ""))
        result = line.get("result") or {}
        kind = str(result.get("type", ""))
        if kind != "succeeded":
            inner = (result.get("error") or {}).get("error") or {}
            message = redact(str(inner.get("message") or kind), [self._key])
            code = {"canceled": "cancelled"}.get(kind, kind or "error")
            return BatchOutcome(custom_id, error_code=code, error_message=message)
        message_doc = result.get("message") or {}
        text = "".join(
            b.get("text", "")
            for b in message_doc.get("content") or []
            if isinstance(b, dict) and b.get("type") == "text"
        )
        answer = ChatResponse(
            text=text,
            usage=from_anthropic(message_doc.get("usage") or {}),
            truncated=message_doc.get("stop_reason") == "max_tokens",
            provider=self.name,
            model=str(message_doc.get("model", "")),
            latency_ms=0,
        )
        return BatchOutcome(custom_id, response=answer)


def _iso_seconds(text: str) -> float | None:
    """Epoch seconds of an RFC 3339 time (`2024-09-24T18:37:24.100435Z`), None if unreadable."""
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def build_batch_provider(config: ProviderConfig) -> BatchProvider | None:
    """The batch API of a configured provider, or None when it has none."""
    if config.kind == "openai":
        return OpenAIBatches(config)
    if config.kind == "anthropic":
        return AnthropicBatches(config)
    return None
