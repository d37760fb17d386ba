"""The records every stage speaks: tasks in, results out, and what each provider call cost.

`Task` is the validated job line after shaping (model chosen, max_tokens set). `Item` is one unit
of model work inside a packed batch; several identical tasks share one item (single-flight).
`Batch` is one packed provider call's worth of items. `Usage` is provider usage normalised to one
meaning, and `CallRecord` is the ledger's immutable record of a call.
"""

from __future__ import annotations

import re
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

TaskStatus = Literal["ok", "failed", "rejected"]

# Tenant names go into Redis keys, cache scopes and file names: a letter or digit, then letters,
# digits, `.`, `_` or `-`, at most 64 in all. No separator a key uses can appear in one.
_TENANT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
TENANT_RULE = "use 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit"


def valid_tenant(name: str) -> bool:
    """Whether `name` is a tenant name batchwise accepts (see `TENANT_RULE`)."""
    return _TENANT.fullmatch(name) is not None


def _checked_tenant(value: str) -> str:
    if not valid_tenant(value):
        raise ValueError(f"invalid tenant {value[:80]!r}: {TENANT_RULE}")
    return value


TenantName = Annotated[str, AfterValidator(_checked_tenant)]
"""A tenant name field: refused with `TENANT_RULE` when it is not a valid one."""


CacheOutcome = Literal["miss", "exact", "semantic"]


class TTLClass(StrEnum):
    """How long an answer stays fresh; decides cache lifetime and linger."""

    static_knowledge = "static_knowledge"
    semi_static = "semi_static"
    daily_update = "daily_update"
    real_time = "real_time"
    no_cache = "no_cache"


TTL_SECONDS: dict[TTLClass, int] = {
    TTLClass.static_knowledge: 30 * 86400,
    TTLClass.semi_static: 7 * 86400,
    TTLClass.daily_update: 86400,
    TTLClass.real_time: 300,
    TTLClass.no_cache: 0,
}

TASK_TYPES: tuple[str, ...] = (
    "general",
    "faq",
    "classification",
    "sentiment",
    "yes_no",
    "extraction",
    "short_answer",
    "summary",
    "long_summary",
    "translation",
    "article",
    "code_snippet",
    "full_code",
    "analysis",
)


class Message(BaseModel):
    """One chat message, OpenAI style. Content is text; structured parts are flattened at intake."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: str


class Task(BaseModel):
    """A validated, shaped prompt task. `messages` never holds the system prompt; `system` does."""

    model_config = ConfigDict(frozen=True)

    id: str
    run_id: str = ""
    line: int = 0
    messages: tuple[Message, ...]
    system: str = ""
    task_type: str = "general"
    model: str = ""
    requested_model: str = ""
    quality: float = 0.5
    budget_sensitive: bool = False
    max_tokens: int = 0
    temperature: float = 0.0
    ttl_class: TTLClass = TTLClass.semi_static
    ttl_s: int | None = None
    tenant: str = "default"
    user_id: str = ""
    endpoint: str = ""
    response_schema: dict[str, Any] | None = None
    metadata: Any = None
    batch_api: bool = False  # may wait for a provider batch API (up to 24 h)
    # may share one pending item with identical tasks (`Settings.single_flight`)
    single_flight: bool = True

    @property
    def prompt(self) -> str:
        """The text a packed batch carries for this task: its last user message."""
        return self.messages[-1].content

    @property
    def packable(self) -> bool:
        """A single-turn task can share a call; a conversation is sent on its own."""
        return len(self.messages) == 1 and self.messages[0].role == "user"


class ErrorInfo(BaseModel):
    model_config = ConfigDict(frozen=True)

    code: str
    message: str


class Result(BaseModel):
    """One result line: exactly one per submitted task."""

    model_config = ConfigDict(frozen=True)

    id: str
    status: TaskStatus
    output: Any = None
    model: str | None = None
    provider: str | None = None
    cache: CacheOutcome = "miss"
    batch_id: str | None = None
    batch_size: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = 0.0
    error: ErrorInfo | None = None
    metadata: Any = None


class Usage(BaseModel):
    """Provider usage with one meaning for every provider.

    `input_tokens` counts every prompt token, cached or not; `cached_input_tokens` and
    `cache_write_tokens` are the parts of it read from and written to the provider's prompt cache.
    """

    model_config = ConfigDict(frozen=True)

    input_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    output_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            cached_input_tokens=self.cached_input_tokens + other.cached_input_tokens,
            cache_write_tokens=self.cache_write_tokens + other.cache_write_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
        )


class Item(BaseModel):
    """One piece of model work: the shared answer of every identical pending task."""

    model_config = ConfigDict(frozen=True)

    key: str
    group: str
    prompt: str
    messages: tuple[Message, ...]
    max_tokens: int
    input_tokens: int
    task_type: str = "general"
    # who asked, for the ledger's attribution (the first task of a single-flight item)
    user_id: str = ""
    endpoint: str = ""
    requested_model: str = ""  # when the router chose another model: the routing baseline


class Batch(BaseModel):
    """One provider call's worth of items, all from one group."""

    model_config = ConfigDict(frozen=True)

    id: str
    group: str
    tenant: str
    model: str
    system: str
    temperature: float
    response_schema: dict[str, Any] | None = None
    ttl_class: TTLClass
    item_keys: tuple[str, ...]
    alone_attempts: int = 0
    created_at: float = 0.0
    alone: bool = False  # packing would cost more: each item is sent as its own call
    recorded: bool = True  # has a record in Redis (an alone batch's one-item calls have none)


class CallRecord(BaseModel):
    """The ledger's immutable record of one provider call, with per-item attribution."""

    model_config = ConfigDict(frozen=True)

    id: str
    at: float
    batch_id: str
    provider: str
    model: str
    simulated: bool = False
    batch_api: bool = False
    # unknown: a call in flight when its worker died, at its reserved worst case; adjustment:
    # brings such a call to the cost of the batch's answer (no call of its own)
    status: Literal["ok", "error", "unknown", "adjustment"]
    error: str | None = None
    usage: Usage = Field(default_factory=Usage)
    cost_usd: Decimal | None = None
    latency_ms: int = 0
    batch_size: int = 0
    tenant: str = "default"
    attribution: dict[str, str] = Field(default_factory=dict)
    # who the cost belongs to, and which try of the batch job made the call
    attempt: int = 1
    shares: tuple[CostShare, ...] = ()


class CostShare(BaseModel):
    """A call's cost and tokens that belong to one (user, endpoint) pair of its tenant."""

    model_config = ConfigDict(frozen=True)

    user_id: str = ""
    endpoint: str = ""
    items: int = 0
    cost_nusd: int | None = None
    input_tokens: int = 0
    output_tokens: int = 0


CallRecord.model_rebuild()


LEVERS: tuple[str, ...] = (
    "cache",
    "packing",
    "single_flight",
    "routing",
    "batch_api",
    "semantic_cache",
)


class Saving(BaseModel):
    """What one lever saved against the naive baseline (each task alone on its requested model).

    Written to the ledger stream beside the call records but apart from spend: it never changes
    a cost. `id` makes it idempotent like a call record (use a stable id, e.g. the task or batch
    id plus the lever). `tasks` is how many tasks the saving concerns (for `cache`: the hits).
    """

    model_config = ConfigDict(frozen=True)

    type: Literal["saving"] = "saving"
    id: str
    at: float
    lever: str
    saved_nusd: int
    tasks: int = 0
    tenant: str = "default"
    user_id: str = ""
    endpoint: str = ""
    model: str = ""
    baseline_nusd: int | None = None
    batch_id: str | None = None

    @field_validator("lever")
    @classmethod
    def _known_lever(cls, value: str) -> str:
        if value not in LEVERS:
            raise ValueError(f"unknown lever {value!r}; use one of: {', '.join(LEVERS)}")
        return value
