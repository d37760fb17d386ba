"""Errors over HTTP in the shape OpenAI's API uses, so every SDK raises its usual exception
types: `{"error": {"message", "type", "param", "code"}}` with the matching status."""

from __future__ import annotations

import re
import time
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

# status -> OpenAI error type
_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "permission_error",
    404: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    502: "server_error",
    503: "server_error",
    504: "server_error",
}


class ApiError(Exception):
    """An HTTP error answer; raised anywhere in a handler, rendered by `error_response`."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.headers = headers or {}


def error_body(status: int, message: str, code: str | None, param: str | None) -> dict[str, Any]:
    return {
        "error": {
            "message": message,
            "type": _TYPES.get(status, "invalid_request_error"),
            "param": param,
            "code": code,
        }
    }


def error_response(error: ApiError) -> JSONResponse:
    return JSONResponse(
        error_body(error.status, error.message, error.code, error.param),
        status_code=error.status,
        headers=error.headers,
    )


async def handle_api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc)


async def handle_unexpected(request: Request, exc: Exception) -> Response:
    """A bug or an outage (Redis gone) as a 500 in the same shape; the traceback goes to the
    server log, never to the client."""
    return error_response(ApiError(500, "internal error; the server log has the details"))


def not_found(kind: str, object_id: str) -> ApiError:
    """The same answer whether the object does not exist or belongs to another tenant."""
    return ApiError(404, f"No {kind} found with id '{object_id[:128]}'.", code="not_found")


_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")


def object_id(value: str, kind: str) -> str:
    """An id from a path or a body; one batchwise never makes is simply not found."""
    if _ID.fullmatch(value) is None:
        raise not_found(kind, value)
    return value


# how a task's result maps onto an HTTP status (chat answers and batch output lines)
_REJECTED_STATUS = {
    "invalid_input": 400,
    "no_provider": 404,
    "budget_exceeded": 429,
    "plan_requests_per_min": 429,
    "plan_daily_requests": 429,
    "plan_daily_tokens": 429,
}


def result_status(record: dict[str, Any]) -> int:
    """200 for an answer; 4xx for a refusal (429 where waiting helps); 502 for a failure."""
    if record.get("status") == "ok":
        return 200
    if record.get("status") == "rejected":
        code = (record.get("error") or {}).get("code", "")
        return _REJECTED_STATUS.get(code, 400)
    return 502


def retry_after_s(code: str, now: float | None = None) -> int:
    """Seconds until the plan window that refused a task opens again."""
    now = time.time() if now is None else now
    if code == "plan_requests_per_min":
        return max(1, 60 - int(now) % 60)
    if code.startswith("plan_daily"):
        return max(1, 86400 - int(now) % 86400)
    return 30


def parse_json(body: bytes) -> Any:
    """A request body as JSON, or a 400 that says why not."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"the body is not valid JSON: {exc}") from None
