"""Faults the fake provider serves on demand, queued in-process with `FakeProvider.add_faults`
or from any process with `POST /_control/faults`. A fault spec is a dict::

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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

STATUS_KINDS = frozenset({"429", "500", "503", "529", "401", "400", "404"})
DELAY_KINDS = frozenset({"timeout", "latency"})
CONTENT_KINDS = frozenset({"malformed", "truncated", "fenced", "prose", "wrong_output"})
PACKED_KINDS = frozenset(
    {"bare_array", "drop", "duplicate_conflict", "duplicate_same", "reorder", "unknown_id"}
    | {"degrade", "results_object"}
)
FAULT_KINDS = STATUS_KINDS | DELAY_KINDS | CONTENT_KINDS | PACKED_KINDS


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

    @property
    def wait_s(self) -> float:
        """How long a delay fault holds its answer."""
        default_s = 30.0 if self.kind == "timeout" else 0.5
        return default_s if self.delay_s is None else self.delay_s
