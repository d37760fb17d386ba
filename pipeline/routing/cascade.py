"""Cascades: answer on a cheap model first, evaluate, and escalate only what failed.

A task type with a cascade (`Settings.cascades`) is routed to the cascade's start tier. When a
batch comes back, each item's output is checked by the type's evaluators. An item that passes is
answered; an item that fails is re-enqueued, as a new item on the next tier's model, with its
waiting tasks and the cost spent so far moved along, so in a packed batch only the failed items
go up. At `max_tier` a failing item ends `failed` (code `evaluation_failed`) or, with
`on_exhausted = "answer"`, gets the last output.

Evaluators return None when the output passes, else the reason it failed. Built in: `json`
(valid JSON), `schema` (conforms to the task's response schema, or one given), `labels` (one of
the allowed labels), `non_empty`, `length` (character bounds); any callable can be registered with
`register_evaluator` or named by `module:function`.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import jsonschema
import orjson
from redis.asyncio import Redis

from pipeline.config.records import CascadeSpec
from pipeline.config.settings import Settings
from pipeline.core.runs import RunStore
from pipeline.errors import ConfigError
from pipeline.fingerprint import group_key
from pipeline.keys import Keys
from pipeline.models import Batch, Item, Task, TTLClass
from pipeline.packing.wire import ITEM_OVERHEAD_TOKENS
from pipeline.routing.router import Router

logger = logging.getLogger("batchwise.cascade")


@dataclass(frozen=True)
class EvalContext:
    """What an evaluator may look at besides the output."""

    task_type: str
    model: str
    prompt: str
    response_schema: dict[str, Any] | None = None


# An evaluator returns None (or True) when the output passes; a reason (or False) when not.
Evaluator = Callable[[Any, EvalContext], "str | bool | None"]


def _as_json(output: Any) -> tuple[bool, Any]:
    if not isinstance(output, str):
        return True, output
    try:
        return True, json.loads(output)
    except ValueError:
        return False, None


def _text(output: Any) -> str:
    if output is None:
        return ""
    return output if isinstance(output, str) else orjson.dumps(output).decode()


def valid_json(output: Any, ctx: EvalContext) -> str | None:
    """The output is JSON: a parsed value, or a string that parses."""
    ok, _ = _as_json(output)
    return None if ok else "output is not valid JSON"


def schema_evaluator(schema: dict[str, Any] | None = None) -> Evaluator:
    """The output conforms to `schema`, or to the task's response schema when none is given."""
    if schema is not None:
        jsonschema.validators.validator_for(schema).check_schema(schema)

    def check(output: Any, ctx: EvalContext) -> str | None:
        wanted = schema if schema is not None else ctx.response_schema
        if wanted is None:
            return None
        ok, value = _as_json(output)
        if not ok:
            return "output is not valid JSON"
        error = jsonschema.exceptions.best_match(
            jsonschema.validators.validator_for(wanted)(wanted).iter_errors(value)
        )
        return None if error is None else f"output does not conform to the schema: {error.message}"

    return check


def labels_evaluator(labels: Sequence[str]) -> Evaluator:
    """The output is one of `labels` (case, spaces, quotes and a final full stop ignored)."""
    allowed = {_label(label) for label in labels}
    if not allowed:
        raise ConfigError("a labels evaluator needs at least one label")

    def check(output: Any, ctx: EvalContext) -> str | None:
        got = _label(_text(output))
        return None if got in allowed else f"label {got!r} is not one of {sorted(allowed)}"

    return check


def _label(text: str) -> str:
    return text.strip().strip("\"'`").strip().rstrip(".。").strip().casefold()


def non_empty(output: Any, ctx: EvalContext) -> str | None:
    """The output has content."""
    if output is None or (isinstance(output, str | list | dict) and not output):
        return "output is empty"
    return None if _text(output).strip() else "output is empty"


def length_evaluator(min_chars: int = 0, max_chars: int | None = None) -> Evaluator:
    """The output's text is between `min_chars` and `max_chars` characters long."""

    def check(output: Any, ctx: EvalContext) -> str | None:
        n = len(_text(output))
        if n < min_chars:
            return f"output has {n} characters, fewer than {min_chars}"
        if max_chars is not None and n > max_chars:
            return f"output has {n} characters, more than {max_chars}"
        return None

    return check


_REGISTERED: dict[str, Evaluator] = {
    "json": valid_json,
    "schema": schema_evaluator(),
    "non_empty": non_empty,
}


def register_evaluator(name: str, evaluator: Evaluator) -> None:
    """Make `evaluator` usable by name in a cascade's `evaluators`."""
    _REGISTERED[name] = evaluator


def build_evaluator(spec: str | dict[str, Any]) -> tuple[str, Evaluator]:
    """An evaluator from its config form: a name, or a table with `kind` and parameters."""
    if isinstance(spec, str):
        if spec in _REGISTERED:
            return spec, _REGISTERED[spec]
        if ":" in spec:
            return spec, _import(spec)
        raise ConfigError(f"unknown evaluator {spec!r}; built in: {sorted(_REGISTERED)}")
    params = dict(spec)
    kind = str(params.pop("kind", ""))
    try:
        if kind == "labels":
            return kind, labels_evaluator(list(params["labels"]))
        if kind == "length":
            return kind, length_evaluator(**params)
        if kind == "schema":
            return kind, schema_evaluator(params.get("schema"))
        if kind == "callable":
            return str(params["path"]), _import(str(params["path"]))
        if kind in _REGISTERED and not params:
            return kind, _REGISTERED[kind]
    except (KeyError, TypeError, jsonschema.SchemaError) as exc:
        raise ConfigError(f"bad evaluator {spec!r}: {exc}") from None
    raise ConfigError(f"unknown evaluator kind {kind!r} in {spec!r}")


def _import(path: str) -> Evaluator:
    module, _, name = path.partition(":")
    try:
        found = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"evaluator {path!r} cannot be imported: {exc}") from None
    if not callable(found):
        raise ConfigError(f"evaluator {path!r} is not callable")
    evaluator: Evaluator = found
    return evaluator


def evaluate(
    evaluators: Sequence[tuple[str, Evaluator]], output: Any, ctx: EvalContext
) -> str | None:
    """The first failure reason among the evaluators, or None when the output passes all."""
    for name, evaluator in evaluators:
        try:
            verdict = evaluator(output, ctx)
        except Exception as exc:  # a broken evaluator fails the output, loudly
            logger.warning("evaluator %s raised %r", name, exc)
            verdict = f"evaluator raised {type(exc).__name__}: {exc}"
        if verdict is None or verdict is True:
            continue
        return f"{name}: {verdict}" if isinstance(verdict, str) else f"{name}: rejected"
    return None


_ESCALATE = """
-- KEYS: old item, old cost, new item, new cost, new group items, groups, new group meta,
--       old cache intent, new cache intent
-- ARGV: new item json, list entry, group meta json, group id, due ms
-- The tasks waiting on the item (after its JSON and \\30) go along. So does the cache intent:
-- the answer that finally passes is cached under the request's original key, so a repeat is
-- a hit instead of the cheap call and the escalation again.
local old = redis.call('GET', KEYS[1])
if not old then return -1 end
local waiting = string.sub(old, string.find(old, '\\30', 1, true) + 1)
if redis.call('EXISTS', KEYS[8]) == 1 then
  if redis.call('EXISTS', KEYS[9]) == 0 then redis.call('RENAME', KEYS[8], KEYS[9])
  else redis.call('DEL', KEYS[8]) end
end
if redis.call('EXISTS', KEYS[3]) == 1 then
  -- the same request is already pending on the new model: join it, cost and all
  redis.call('APPEND', KEYS[3], waiting)
  local cost = redis.call('HGETALL', KEYS[2])  -- one field per call: the calls add up
  for i = 1, #cost, 2 do redis.call('HSET', KEYS[4], cost[i], cost[i + 1]) end
  redis.call('DEL', KEYS[1], KEYS[2])
  return 2
end
redis.call('SET', KEYS[3], ARGV[1] .. '\\30' .. waiting)
if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('RENAME', KEYS[2], KEYS[4]) end
redis.call('RPUSH', KEYS[5], ARGV[2])
redis.call('SETNX', KEYS[7], ARGV[3])
redis.call('EXPIRE', KEYS[7], 2592000)
redis.call('ZADD', KEYS[6], ARGV[5], ARGV[4])
redis.call('DEL', KEYS[1])
return 1
"""


class Cascade:
    """Evaluates answers of cascaded task types and escalates the ones that fail."""

    def __init__(
        self, redis: Redis, settings: Settings, keys: Keys, router: Router, runs: RunStore
    ) -> None:
        self.redis = redis
        self.settings = settings
        self.keys = keys
        self.router = router
        self.runs = runs
        self._evaluators = {
            task_type: [build_evaluator(e) for e in spec.evaluators]
            for task_type, spec in settings.cascades.items()
        }
        self._escalate = redis.register_script(_ESCALATE)

    async def settle(self, batch: Batch, item: Item, output: Any, size: int) -> bool:
        """True when the item was taken care of here (escalated or failed), False to answer it."""
        spec = self.settings.cascades.get(item.task_type)
        if spec is None:
            return False
        ctx = EvalContext(item.task_type, batch.model, item.prompt, batch.response_schema)
        reason = evaluate(self._evaluators[item.task_type], output, ctx)
        stats = self.keys.cascade_stats(item.task_type)
        if reason is None:
            await self.redis.hincrby(stats, f"passed:{batch.model}", 1)
            return False
        target = self.router.next_model(batch.model, spec.max_tier)
        if target is None:
            return await self._exhausted(spec, batch, item, size, reason)
        moved = await self._move(batch, item, target)
        if moved is None:  # the group's metadata is gone: nowhere to send it
            return await self._exhausted(spec, batch, item, size, reason)
        if moved:
            await self.redis.hincrby(stats, f"escalated:{batch.model}>{target}", 1)
            logger.info(
                "batch %s: item %s escalated %s -> %s (%s)",
                batch.id,
                item.key[:12],
                batch.model,
                target,
                reason,
            )
        return True

    def _linger_ms(self, ttl_class: TTLClass) -> int:
        return 0 if ttl_class is TTLClass.real_time else self.settings.linger_ms

    async def _exhausted(
        self, spec: CascadeSpec, batch: Batch, item: Item, size: int, reason: str
    ) -> bool:
        await self.redis.hincrby(self.keys.cascade_stats(item.task_type), "exhausted", 1)
        if spec.on_exhausted == "answer":
            return False
        await self.runs.finish_item(
            item.key,
            {
                "status": "failed",
                "model": batch.model,
                "batch_id": batch.id,
                "batch_size": size,
                **(await self.runs.spent([item.key]))[0],
                "error": {
                    "code": "evaluation_failed",
                    "message": f"the answer of {batch.model}, the last model of the cascade, "
                    f"failed evaluation: {reason}",
                },
            },
        )
        return True

    async def _move(self, batch: Batch, item: Item, model: str) -> bool | None:
        """Re-enqueue the item on `model`, taking its waiting tasks and cost so far along.

        False when a re-run finds it already moved; None when it cannot be moved."""
        raw = await self.redis.get(self.keys.group(batch.group))
        if raw is None:
            return None
        meta: dict[str, Any] = orjson.loads(raw)
        meta["model"] = model
        shape = Task(
            id=item.key,
            messages=item.messages,
            system=meta["system"],
            task_type=meta.get("task_type", item.task_type),
            model=model,
            max_tokens=item.max_tokens,
            temperature=meta["temperature"],
            ttl_class=TTLClass(meta["ttl_class"]),
            tenant=meta["tenant"],
            response_schema=meta["response_schema"],
        )
        group = group_key(shape)
        new_key = hashlib.sha256(f"{item.key}>{model}".encode()).hexdigest()
        escalated = item.model_copy(update={"key": new_key, "group": group})
        entry = f"{new_key}|{item.input_tokens}|{item.max_tokens + ITEM_OVERHEAD_TOKENS}"
        k = self.keys
        done = await self._escalate(
            keys=[
                k.item(item.key),
                k.item_cost(item.key),
                k.item(new_key),
                k.item_cost(new_key),
                k.group_items(group),
                k.groups(),
                k.group(group),
                k.cache_intent(item.key),
                k.cache_intent(new_key),
            ],
            args=[
                escalated.model_dump_json(),
                entry,
                orjson.dumps(meta),
                group,
                # linger like a new item, so the batch's other failures join the same call
                int(time.time() * 1000) + self._linger_ms(batch.ttl_class),
            ],
        )
        return bool(done in (1, 2))
