"""Job lines over HTTP: the same validation and per-line errors as job files, with the tenant
(and the user, when the key names one) taken from the API key, never from a line."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import orjson

from pipeline.core.intake import LineError, validate
from pipeline.models import Task
from pipeline.server.auth import Principal


def split_jsonl(
    content: bytes, *, max_line_bytes: int, source: str
) -> Iterator[tuple[int, Any | LineError]]:
    """(line number, decoded object) per non-blank line; a LineError for an unreadable one."""
    for number, raw in enumerate(content.split(b"\n"), start=1):
        if not raw.strip():
            continue
        if len(raw) > max_line_bytes:
            reason = f"line longer than the limit of {max_line_bytes} bytes"
            yield number, LineError(source, number, reason)
            continue
        try:
            yield number, orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            yield number, LineError(source, number, f"not valid JSON: {exc}")


def _auto_model(obj: Any) -> Any:
    """`"model": "auto"` lets the router choose, in either line form."""
    if not isinstance(obj, dict):
        return obj
    body = obj.get("body")
    if isinstance(body, dict) and body.get("model") == "auto":
        return {**obj, "body": {k: v for k, v in body.items() if k != "model"}}
    if obj.get("model") == "auto":
        return {k: v for k, v in obj.items() if k != "model"}
    return obj


def check_lines(
    entries: Iterable[tuple[int, Any | LineError]],
    who: Principal,
    *,
    source: str,
    batch_api: bool = False,
) -> Iterator[Task | LineError]:
    """Validate decoded lines into the key's tasks; a line that names a tenant is refused."""
    seen: set[str] = set()
    for number, obj in entries:
        if isinstance(obj, LineError):
            yield obj
            continue
        if isinstance(obj, dict) and "tenant" in obj:
            given = obj.get("id", obj.get("custom_id"))
            task_id = str(given) if isinstance(given, str | int) and str(given) not in seen else ""
            if task_id:
                seen.add(task_id)
            yield LineError(
                source,
                number,
                "the API key decides the tenant; remove the field",
                "tenant",
                task_id,
            )
            continue
        checked = validate(_auto_model(obj), number, seen, source=source)
        if isinstance(checked, LineError):
            yield checked
            continue
        update: dict[str, Any] = {"tenant": who.tenant, "batch_api": batch_api}
        if who.user_id:
            update["user_id"] = who.user_id
        yield checked.model_copy(update=update)
