"""The fake provider's responses in each protocol's own shape: OpenAI Chat Completions and
Anthropic Messages bodies, their error bodies, and the 400s a real provider gives a malformed
request."""

from __future__ import annotations

import time
from typing import Any

from pipeline.testing.http import Response, json_response

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


def request_problem(path: str, headers: dict[str, str], req: dict[str, Any] | None) -> str:
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


def error_response(
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
    if path == "openai":
        body: dict[str, Any] = {
            "error": {"message": text, "type": openai_type, "param": None, "code": code}
        }
    else:
        body = {"type": "error", "error": {"type": anthropic_type, "message": text}}
    return json_response(status, body, headers)


def openai_body(
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


def anthropic_body(
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


def chat_response(
    path: str, n: int, model: str, content: str, finished: bool, usage: dict[str, int]
) -> Response:
    """A successful answer in the protocol of `path`, with its request id header."""
    if path == "openai":
        doc = openai_body(n, model, content, finished, usage)
        return json_response(200, doc, {"x-request-id": f"req_fake{n}"})
    doc = anthropic_body(n, model, content, finished, usage)
    return json_response(200, doc, {"request-id": f"req_fake{n}"})
