"""Job lines in: streaming JSONL parsing and validation into `Task`s.

Two line forms are accepted: the native job line (the README's "Concepts") and the OpenAI Batch
API line (`custom_id`, `method`, `url`, `body`). A bad line becomes a `LineError` that names the
file, the line, the field and the reason; the good lines go on. Files are read line by line, never
whole.

Everything a line stores is bounded here, so one poison line is refused alone and can never break
the chunk it travels in: values nest at most `MAX_DEPTH` deep, `metadata` and `response_schema`
serialise to at most `MAX_FIELD_BYTES` each, a conversation holds at most `MAX_MESSAGES` messages,
a response schema must be a valid JSON Schema, and tenant names use a safe character set.

A line without an id gets `line-N` (its line number). Such ids are reserved: an explicit id of
that form is accepted only on line N itself, so no given id can collide with a generated one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from jsonschema.exceptions import SchemaError
from jsonschema.validators import Draft202012Validator, validator_for
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pipeline.cache.ttl import infer_ttl_class
from pipeline.errors import InputError
from pipeline.models import TASK_TYPES, Message, Task, TenantName, TTLClass, valid_tenant

MAX_DEPTH = 32
MAX_FIELD_BYTES = 64 * 1024
MAX_MESSAGES = 1000
MAX_ID_CHARS = 256
_GENERATED_ID = re.compile(r"line-[1-9][0-9]*")


@dataclass(frozen=True)
class LineError:
    """Why one line was refused; `str()` gives the message a user sees."""

    source: str
    line: int
    reason: str
    field: str = ""
    task_id: str = ""
    tenant: str = "default"

    def __str__(self) -> str:
        field = f" field {self.field!r}:" if self.field else ""
        return f"{self.source}:{self.line}:{field} {self.reason}"


class JobLine(BaseModel):
    """The native job line. Unknown fields are refused so a typo never passes silently."""

    model_config = ConfigDict(extra="forbid")

    id: str | int | None = None
    prompt: str | None = None
    messages: list[dict[str, Any]] | None = None
    system: str | None = None
    task_type: str = "general"
    model: str | None = None
    quality: float = Field(0.5, ge=0, le=1)
    budget_sensitive: bool = False
    max_tokens: int | None = Field(None, gt=0)
    temperature: float = Field(0.0, ge=0, le=2)
    ttl_class: TTLClass | None = None
    ttl_s: int | None = Field(None, ge=0)
    tenant: TenantName = "default"
    user_id: str = ""
    endpoint: str = ""
    response_schema: dict[str, Any] | None = None
    metadata: Any = None

    @field_validator("response_schema")
    @classmethod
    def _json_schema(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            checker = validator_for(value, default=Draft202012Validator)
            try:
                checker.check_schema(value)
            except SchemaError as exc:
                raise ValueError(f"not a valid JSON Schema: {exc.message[:200]}") from None
        return value

    @field_validator("task_type")
    @classmethod
    def _known_task_type(cls, value: str) -> str:
        if value not in TASK_TYPES:
            raise ValueError(f"unknown task_type {value!r}; use one of: {', '.join(TASK_TYPES)}")
        return value


def _flatten_content(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict) and part.get("type") == "text" and "text" in part:
                parts.append(str(part["text"]))
            else:
                raise ValueError(f"{where}: only text content parts are supported")
        return "\n".join(parts)
    raise ValueError(f"{where}: content must be a string or a list of text parts")


def _split_messages(
    raw: list[dict[str, Any]], system: str | None
) -> tuple[str, tuple[Message, ...]]:
    """Move system messages into the system prompt; keep the conversation in order."""
    systems = [system] if system else []
    turns: list[Message] = []
    for i, msg in enumerate(raw):
        if not isinstance(msg, dict) or "role" not in msg:
            raise ValueError(f"messages[{i}] must be an object with 'role' and 'content'")
        role = msg["role"]
        content = _flatten_content(msg.get("content"), f"messages[{i}]")
        if role in ("system", "developer"):
            systems.append(content)
        elif role in ("user", "assistant"):
            turns.append(Message(role=role, content=content))
        else:
            raise ValueError(f"messages[{i}]: unsupported role {role!r}")
    if not turns or turns[-1].role != "user":
        raise ValueError("messages must end with a user message")
    return "\n\n".join(systems), tuple(turns)


def _from_openai_batch(obj: dict[str, Any]) -> dict[str, Any]:
    """Translate an OpenAI Batch API line into the native form."""
    url = obj.get("url", "/v1/chat/completions")
    if url != "/v1/chat/completions":
        raise _FieldError("url", f"only /v1/chat/completions is supported, got {url!r}")
    if obj.get("method", "POST") != "POST":
        raise _FieldError("method", "must be POST")
    body = obj.get("body")
    if not isinstance(body, dict):
        raise _FieldError("body", "must be an object")
    return {"id": obj.get("custom_id"), **from_openai_chat(body)}


def from_openai_chat(body: dict[str, Any]) -> dict[str, Any]:
    """The native fields of an OpenAI chat-completions request body (the fields batchwise uses;
    sampling fields it does not use are left out)."""
    native: dict[str, Any] = {"messages": body.get("messages")}
    for name in ("model", "temperature", "metadata"):
        if name in body:
            native[name] = body[name]
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None:
        native["max_tokens"] = max_tokens
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        schema = fmt.get("json_schema")
        native["response_schema"] = schema.get("schema") if isinstance(schema, dict) else None
    return native


_RESERVED = "ids of the form line-N are reserved for the id given to line N; choose another id"


def _own_id(task_id: str, line: int) -> bool:
    """False for an id of the generated form that names another line than its own."""
    return not _GENERATED_ID.fullmatch(task_id) or task_id == f"line-{line}"


def _depth(value: Any) -> int:
    """How deep containers nest in a decoded JSON value (a scalar is 0), without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, dict | list):
            deepest = max(deepest, level)
            children = node.values() if isinstance(node, dict) else node
            stack.extend((child, level + 1) for child in children)
    return deepest


def _check_bounds(obj: dict[str, Any]) -> None:
    """Refuse values intake would store but no later stage can carry."""
    for name, value in obj.items():
        if _depth(value) > MAX_DEPTH:
            raise _FieldError(str(name), f"nests deeper than {MAX_DEPTH} levels; flatten it")
    body = obj.get("body")
    inner = body.items() if isinstance(body, dict) else ()
    for name, value in (*obj.items(), *inner):
        if name == "messages" and isinstance(value, list) and len(value) > MAX_MESSAGES:
            raise _FieldError("messages", f"more than {MAX_MESSAGES} messages; shorten it")
        if name in ("metadata", "response_schema", "response_format") and value is not None:
            size = len(orjson.dumps(value))
            if size > MAX_FIELD_BYTES:
                raise _FieldError(
                    str(name), f"{size} bytes, above the limit of {MAX_FIELD_BYTES}; shorten it"
                )


class _FieldError(Exception):
    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason


def parse_object(obj: Any, *, line: int, run_id: str = "") -> Task:
    """Validate one decoded job line. Raises `_FieldError` with the field at fault."""
    if not isinstance(obj, dict):
        raise _FieldError("", f"a job line must be a JSON object, got {type(obj).__name__}")
    _check_bounds(obj)
    if "custom_id" in obj and "body" in obj:
        obj = _from_openai_batch(obj)
    try:
        job = JobLine.model_validate(obj)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown field; check the spelling against the job line format"
        raise _FieldError(field, message) from None

    if job.prompt is not None and job.messages is not None:
        raise _FieldError("prompt", "give either 'prompt' or 'messages', not both")
    if job.messages is not None:
        try:
            system, messages = _split_messages(job.messages, job.system)
        except ValueError as exc:
            raise _FieldError("messages", str(exc)) from None
    elif job.prompt is not None:
        system, messages = job.system or "", (Message(role="user", content=job.prompt),)
    else:
        raise _FieldError("prompt", "missing: give 'prompt' or 'messages'")
    if not messages[-1].content.strip():
        raise _FieldError("prompt", "empty prompt")

    task_id = str(job.id) if job.id is not None else f"line-{line}"
    if not task_id.strip() or len(task_id) > MAX_ID_CHARS:
        raise _FieldError("id", f"must be a non-empty string of at most {MAX_ID_CHARS} characters")
    if not _own_id(task_id, line):
        raise _FieldError("id", _RESERVED)
    ttl_class = job.ttl_class or infer_ttl_class(job.task_type, messages[-1].content)
    return Task(
        id=task_id,
        run_id=run_id,
        line=line,
        messages=messages,
        system=system,
        task_type=job.task_type,
        model=job.model or "",
        requested_model=job.model or "",
        quality=job.quality,
        budget_sensitive=job.budget_sensitive,
        max_tokens=job.max_tokens or 0,
        temperature=job.temperature,
        ttl_class=ttl_class,
        ttl_s=job.ttl_s,
        tenant=job.tenant,
        user_id=job.user_id,
        endpoint=job.endpoint,
        response_schema=job.response_schema,
        metadata=job.metadata,
    )


def read_lines(path: Path, *, max_line_bytes: int) -> Iterator[tuple[int, bytes | LineError]]:
    """Yield (line number, raw bytes) for each non-blank line, streaming the file.

    A line longer than `max_line_bytes` is skipped without being held in memory whole.
    """
    source = str(path)
    with path.open("rb") as fh:
        number = 0
        while True:
            chunk = fh.readline(max_line_bytes + 1)
            if not chunk:
                return
            number += 1
            if len(chunk) > max_line_bytes and not chunk.endswith(b"\n"):
                while chunk and not chunk.endswith(b"\n"):  # drain the rest of the long line
                    chunk = fh.readline(1 << 20)
                yield (
                    number,
                    LineError(
                        source, number, f"line longer than the limit of {max_line_bytes} bytes"
                    ),
                )
                continue
            if chunk.strip():
                yield number, chunk


def parse_lines(
    lines: Iterable[tuple[int, bytes | LineError]], *, source: str, run_id: str = ""
) -> Iterator[Task | LineError]:
    """Validate raw lines into tasks or line errors. Duplicate ids are refused after the first."""
    seen: set[str] = set()
    for number, raw in lines:
        if isinstance(raw, LineError):
            yield raw
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield LineError(source, number, f"not valid UTF-8 (byte {exc.start})")
            continue
        try:
            obj = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            yield LineError(source, number, f"not valid JSON: {exc}")
            continue
        yield validate(obj, number, seen, source=source, run_id=run_id)


def validate(
    obj: Any, number: int, seen: set[str], *, source: str, run_id: str = ""
) -> Task | LineError:
    """One decoded line or API task: a Task, or a LineError naming the field at fault.

    `seen` collects ids across calls; an id met again is refused as a duplicate. An invalid
    line's id counts as seen too, so no two results can ever share an id.
    """
    try:
        task = parse_object(obj, line=number, run_id=run_id)
    except _FieldError as exc:
        given = obj.get("id", obj.get("custom_id")) if isinstance(obj, dict) else None
        task_id = str(given) if isinstance(given, str | int) and not isinstance(given, bool) else ""
        usable = task_id.strip() and len(task_id) <= MAX_ID_CHARS and _own_id(task_id, number)
        if usable and task_id not in seen:
            seen.add(task_id)
        else:
            task_id = ""
        tenant = obj.get("tenant") if isinstance(obj, dict) else None
        tenant = tenant if isinstance(tenant, str) and valid_tenant(tenant) else "default"
        return LineError(source, number, exc.reason, exc.field, task_id, tenant)
    if task.id in seen:
        return LineError(source, number, f"duplicate id {task.id!r}", "id", tenant=task.tenant)
    seen.add(task.id)
    return task


def check_job_file(path: Path) -> None:
    """Refuse, with what to do, a path that is not a readable job file."""
    if path.is_dir():
        raise InputError("is a directory; give the path of a JSONL job file", where=str(path))
    if not path.is_file():
        raise InputError("no such file; give the path of a JSONL job file", where=str(path))


def read_file(path: Path, *, max_line_bytes: int, run_id: str = "") -> Iterator[Task | LineError]:
    """Stream and validate a JSONL job file."""
    check_job_file(path)
    yield from parse_lines(
        read_lines(path, max_line_bytes=max_line_bytes), source=str(path), run_id=run_id
    )


def result_id(error: LineError) -> str:
    """The id a refused line's result carries: its own id when usable, else `line-N`."""
    return error.task_id or f"line-{error.line}"
