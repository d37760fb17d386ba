"""Stable identities for tasks: the request key (cache and single-flight) and the group key.

Both are SHA-256 over a canonical serialisation: sorted keys, whitespace runs folded to one
space and trimmed, so key order and incidental spacing never change a key, while every message,
parameter and the tenant scope do.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import orjson

from pipeline.models import Task, TTLClass

_SPACE = re.compile(r"\s+")


def _norm(value: Any) -> Any:
    if isinstance(value, str):
        return _SPACE.sub(" ", value).strip()
    if isinstance(value, dict):
        return {str(k): _norm(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_norm(v) for v in value]
    return value


def canonical_hash(value: Any) -> str:
    """SHA-256 hex of the canonical serialisation of `value`."""
    blob = orjson.dumps(_norm(value), option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(blob).hexdigest()


def request_key(task: Task, *, scope: str | None = None) -> str:
    """The identity of the answer a task asks for: equal keys may share one answer."""
    return canonical_hash(
        {
            "scope": scope if scope is not None else f"tenant:{task.tenant}",
            "model": task.model,
            "messages": [{"role": "system", "content": task.system}]
            + [m.model_dump() for m in task.messages],
            "temperature": task.temperature,
            "max_tokens": task.max_tokens,
            "schema": task.response_schema,
        }
    )


def item_key(task: Task) -> str:
    """The pending-work identity. Identical tasks collapse into one item (single-flight),
    except `no_cache` tasks, which asked for a fresh answer of their own, and every task when
    single-flight is off."""
    key = request_key(task)
    if task.ttl_class is TTLClass.no_cache or not task.single_flight:
        return canonical_hash([key, task.run_id, task.id])
    if task.batch_api:  # a task that needs its answer now never waits on a provider batch
        return canonical_hash([key, "batch_api"])
    return key


def group_key(task: Task) -> str:
    """Tasks of one group may share a provider call: same tenant, model, system prompt,
    temperature, response schema, TTL class and task type. A conversation is its own group."""
    fields: dict[str, Any] = {
        "tenant": task.tenant,
        "model": task.model,
        "system": task.system,
        "temperature": task.temperature,
        "schema": task.response_schema,
        "ttl": task.ttl_class.value,
        "type": task.task_type,
    }
    if not task.packable:
        fields["conversation"] = item_key(task)
    if task.batch_api:
        fields["batch_api"] = True
    return canonical_hash(fields)[:32]
