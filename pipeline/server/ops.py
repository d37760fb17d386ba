"""Operations: `/healthz`, `/metrics` (Prometheus), `/dashboard` (the HTML cost report, live),
the request body limit and structured access logs (never a key, a header or a body)."""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pipeline.costs.dashboard import render_html
from pipeline.costs.metrics import REGISTRY
from pipeline.costs.reports import build_report
from pipeline.server.errors import ApiError, error_response
from pipeline.server.state import principal, state_of

access_log = logging.getLogger("batchwise.access")

REQUESTS = Counter(
    "batchwise_http_requests",
    "HTTP API requests answered.",
    ["method", "route", "status"],
    registry=REGISTRY,
)
LATENCY = Histogram(
    "batchwise_http_request_seconds",
    "HTTP API time to answer (to the first body byte for streamed results).",
    ["route"],
    registry=REGISTRY,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 120),
)
DASHBOARD_REFRESH_S = 10


async def healthz(request: Request) -> Response:
    try:
        await state_of(request).pipeline.redis.ping()
    except Exception:
        return JSONResponse({"status": "unavailable", "redis": False}, status_code=503)
    return JSONResponse({"status": "ok", "redis": True})


def _admin(request: Request) -> None:
    if not principal(request).admin:
        raise ApiError(
            403,
            "this key's tenant may not read operator pages; list it in "
            "BATCHWISE_SERVER_ADMIN_TENANTS",
            code="forbidden",
        )


async def metrics(request: Request) -> Response:
    _admin(request)
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


async def dashboard(request: Request) -> Response:
    _admin(request)
    p = state_of(request).pipeline
    report = await build_report(p.redis, p.keys)
    page = render_html(report).replace(
        "<head>", f'<head>\n<meta http-equiv="refresh" content="{DASHBOARD_REFRESH_S}">', 1
    )
    return HTMLResponse(page)


class BodyTooLarge(Exception):
    pass


class Guard:
    """ASGI middleware: refuses bodies over the limit (413) and writes one access-log line
    per request with method, route, status, duration, tenant and byte counts."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        seen: dict[str, Any] = {"in": 0, "out": 0, "status": 500, "started": False}
        limit = self.max_body_bytes

        async def counted_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                seen["in"] += len(message.get("body", b""))
                if seen["in"] > limit:
                    raise BodyTooLarge
            return message

        async def counted_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                seen["status"], seen["started"] = message["status"], True
                LATENCY.labels(_route(scope)).observe(time.perf_counter() - started)
            elif message["type"] == "http.response.body":
                seen["out"] += len(message.get("body", b""))
            await send(message)

        try:
            declared = int(dict(scope["headers"]).get(b"content-length", b"0") or 0)
            if declared > limit:
                raise BodyTooLarge
            await self.app(scope, counted_receive, counted_send)
        except BodyTooLarge:
            if seen["started"]:
                raise
            error = ApiError(413, f"the request body is larger than {limit} bytes")
            await error_response(error)(scope, receive, counted_send)
        finally:
            self._log(scope, seen, started)

    @staticmethod
    def _log(scope: Scope, seen: dict[str, Any], started: float) -> None:
        route = _route(scope)
        REQUESTS.labels(scope["method"], route, str(seen["status"])).inc()
        who = (scope.get("state") or {}).get("principal")
        access_log.info(
            "%s",
            orjson.dumps(
                {
                    "method": scope["method"],
                    "path": scope["path"],
                    "route": route,
                    "status": seen["status"],
                    "ms": round((time.perf_counter() - started) * 1000, 1),
                    "tenant": getattr(who, "tenant", None),
                    "bytes_in": seen["in"],
                    "bytes_out": seen["out"],
                }
            ).decode(),
        )


def _route(scope: Scope) -> str:
    route = scope.get("route")
    return str(getattr(route, "path", "unmatched"))
