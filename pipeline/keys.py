"""Every Redis key batchwise uses, in one place. All keys start with the configured prefix."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    prefix: str = "bw"

    # runs and their results
    def run(self, run_id: str) -> str:
        return f"{self.prefix}:run:{run_id}"

    def run_order(self, run_id: str) -> str:
        """List of task ids in input order."""
        return f"{self.prefix}:run:{run_id}:order"

    def run_results(self, run_id: str) -> str:
        """Hash task id -> result JSON."""
        return f"{self.prefix}:run:{run_id}:results"

    def run_tasks(self, run_id: str) -> str:
        """Hash task id -> the task's metadata JSON, echoed back in its result."""
        return f"{self.prefix}:run:{run_id}:tasks"

    def runs(self) -> str:
        """Sorted set of run ids by creation time."""
        return f"{self.prefix}:runs"

    def task_runs(self, tenant: str, day: int) -> str:
        """Hash task id -> the latest run of that day (day number) in which a tenant used the
        id (tenant names hold no `:`)."""
        return f"{self.prefix}:taskrun:{tenant}:day:{day}"

    # pending work
    def groups(self) -> str:
        """Sorted set group key -> time its oldest pending item arrived."""
        return f"{self.prefix}:groups"

    def groups_full(self) -> str:
        """Set of groups holding at least a full batch: flushed at the next tick."""
        return f"{self.prefix}:groups:full"

    def group(self, group: str) -> str:
        """JSON of the group's shared fields (tenant, model, system, ...)."""
        return f"{self.prefix}:group:{group}"

    def group_items(self, group: str) -> str:
        """List of pending item keys of a group."""
        return f"{self.prefix}:group:{group}:items"

    def item(self, item_key: str) -> str:
        """The item's JSON, then \\x1e and `length:run_id\\x1ftask_id` of each task waiting on
        it; lives while the item is pending or in flight."""
        return f"{self.prefix}:item:{item_key}"

    def item_cost(self, item_key: str) -> str:
        """Hash of accumulated attribution for the item: cost in nano-dollars (`nusd`, or
        `unknown`), tokens (`in`, `out`) and a `call:<ledger id>` field per call it took."""
        return f"{self.prefix}:item:{item_key}:cost"

    # batches
    def batch(self, batch_id: str) -> str:
        return f"{self.prefix}:batch:{batch_id}"

    def batch_response(self, batch_id: str) -> str:
        """The provider's answer, stored before it is split, so a re-run never calls twice."""
        return f"{self.prefix}:batch:{batch_id}:response"

    def open_batches(self) -> str:
        """Sorted set batch id -> creation time, for batches not yet finished."""
        return f"{self.prefix}:batches:open"

    # ledger
    def ledger(self) -> str:
        """Stream of call records."""
        return f"{self.prefix}:ledger"

    def ledger_archive_mark(self) -> str:
        """The stream id up to which the ledger is archived to Parquet (and trimmed)."""
        return f"{self.prefix}:ledger:archived"

    def ledger_archive_lease(self) -> str:
        """Held by the one process archiving the ledger right now."""
        return f"{self.prefix}:ledger:archiving"

    def ledger_archive_root(self) -> str:
        """The folder the archiver writes to: readers find archived per-user detail there."""
        return f"{self.prefix}:ledger:archive_root"

    def ledger_ids(self) -> str:
        """Set of recorded call ids: the ledger's idempotency guard."""
        return f"{self.prefix}:ledger:ids"

    # ledger rollups: integer counters per hour and day, written with each record
    def ledger_hour(self, hour: str) -> str:
        """Hash of an hour's totals and low-cardinality breakdowns (`hour` is YYYYMMDDHH, UTC)."""
        return f"{self.prefix}:ledger:h:{hour}"

    def ledger_hour_users(self, hour: str, scope: str = "") -> str:
        """Hash user -> an hour's cost, overall or inside a scope (`t:tenant`, `e:endpoint`);
        read only to explain an anomaly."""
        return f"{self.prefix}:ledger:hu:{hour}" + (f":{scope}" if scope else "")

    def ledger_day(self, day: str) -> str:
        """Hash of a day's totals and every breakdown (`day` is YYYYMMDD, UTC)."""
        return f"{self.prefix}:ledger:d:{day}"

    def ledger_day_users(self, day: str, scope: str) -> str:
        """Hash user -> a day's cost inside a scope (`t:tenant`, `e:endpoint`)."""
        return f"{self.prefix}:ledger:du:{day}:{scope}"

    def ledger_journal(self) -> str:
        """List of rollup counters appended with their records, not yet folded into the hashes."""
        return f"{self.prefix}:ledger:journal"

    def ledger_hours(self) -> str:
        """Sorted set of hours that have records, scored by the hour's start (epoch s)."""
        return f"{self.prefix}:ledger:hours"

    # budgets, plans and the cost circuit breaker
    def budget_config(self) -> str:
        """Hash of operator overrides: `monthly_usd`, `limit:SCOPE:hourly|daily` (nano-dollars),
        and the open breakers: `open:SCOPE` = `until|window|limit|used|wanted|opened_at`."""
        return f"{self.prefix}:budget:config"

    def breaker_spend(self, scope: str, day: int) -> str:
        """Hash of a scope's spend in one day (day number), nano-dollars per hour: `h:HOUR`
        reserved plus settled, `s:HOUR` settled only (hour number)."""
        return f"{self.prefix}:breaker:spend:{scope}:day:{day}"

    def breaker_scopes(self) -> str:
        """Set of scopes that have had a reservation: what `budget status` shows."""
        return f"{self.prefix}:breaker:scopes"

    def reservation(self, batch_id: str) -> str:
        """Hash of a batch's budget reservation: amount, state (held | settled), counters."""
        return f"{self.prefix}:breaker:res:{batch_id}"

    def month_spend(self, month: str) -> str:
        """Settled spend of a calendar month (`YYYY-MM`, UTC) in nano-dollars."""
        return f"{self.prefix}:spend:{month}"

    def month_tenant_spend(self, month: str) -> str:
        """Hash tenant -> settled spend of the month in nano-dollars."""
        return f"{self.prefix}:spend:{month}:tenants"

    def budget_alert(self, month: str, pct: int) -> str:
        """Set once when the month's spend first reaches `pct`% of the budget."""
        return f"{self.prefix}:budget:alert:{month}:{pct}"

    def degraded(self) -> str:
        """Hash of routing switches made under budget pressure: `total`, `FROM>TO` counts."""
        return f"{self.prefix}:budget:degraded"

    def degrade_state(self) -> str:
        """`1` while routes are degraded, `0` otherwise: logs each switch once."""
        return f"{self.prefix}:budget:degrade_state"

    def plan_assignments(self) -> str:
        """Hash subject (`user:ID` or `tenant:NAME`) -> plan name: operator overrides."""
        return f"{self.prefix}:plans:assign"

    def plan_used(self, subject: str, limit: str, window: int) -> str:
        """A plan counter of a subject in one window (minute or day number)."""
        return f"{self.prefix}:plans:used:{subject}:{limit}:{window}"

    # provider health and shared rate limits
    def provider_health(self, provider: str) -> str:
        """Hash of a provider's circuit: failures, open_until_ms, reason."""
        return f"{self.prefix}:health:{provider}"

    def provider_probe(self, provider: str) -> str:
        """Lease held by the one half-open probe of a provider."""
        return f"{self.prefix}:health:{provider}:probe"

    def rate_log(self, scope: str, measure: str) -> str:
        """Sorted set of grants in the current window (`measure`: req or tok) of a scope."""
        return f"{self.prefix}:rate:{scope}:{measure}"

    def rate_sum(self, scope: str, measure: str) -> str:
        """Running total of the grants in `rate_log`."""
        return f"{self.prefix}:rate:{scope}:{measure}:sum"

    def rate_block(self, scope: str) -> str:
        """Epoch ms before which nobody may call the scope (Retry-After, exhausted headers)."""
        return f"{self.prefix}:rate:{scope}:block"

    def rate_learned(self, scope: str) -> str:
        """Hash of limits learned from the provider's rate-limit headers: req, tok."""
        return f"{self.prefix}:rate:{scope}:learned"

    # provider batch APIs and nightly runs
    def bapi_pending(self) -> str:
        """Sorted set batch id -> ms it was handed to the batch API, awaiting a provider batch."""
        return f"{self.prefix}:bapi:pending"

    def bapi_subs(self) -> str:
        """Sorted set of open provider-batch submissions by creation time."""
        return f"{self.prefix}:bapi:subs"

    def bapi_sub(self, sub_id: str) -> str:
        """Hash: provider, model, batch ids, state, the provider's batch id."""
        return f"{self.prefix}:bapi:sub:{sub_id}"

    def bapi_owner(self, provider_batch: str) -> str:
        """The submission that owns a provider batch (so a lost one is never adopted twice)."""
        return f"{self.prefix}:bapi:owner:{provider_batch}"

    def bapi_lease(self, sub_id: str) -> str:
        """Held by the one worker that submits or settles a submission right now."""
        return f"{self.prefix}:bapi:lease:{sub_id}"

    def nightly_claim(self, name: str) -> str:
        """SET NX claim on an inbox file name while it is moved to processing."""
        return f"{self.prefix}:nightly:claim:{name}"

    def nightly_lease(self, tag: str) -> str:
        """Held by the one worker advancing a claimed nightly file right now."""
        return f"{self.prefix}:nightly:lease:{tag}"

    def nightly_file(self, tag: str) -> str:
        """Hash: state, run id, name of a claimed nightly file."""
        return f"{self.prefix}:nightly:file:{tag}"

    # routing and optimisation
    def cascade_stats(self, task_type: str) -> str:
        """Hash of cascade counters of a task type: passed, escalated a>b, exhausted."""
        return f"{self.prefix}:cascade:{task_type}"

    def audit_stats(self, task_type: str) -> str:
        """Hash `size:n` / `size:sum` of packing-audit agreement of a task type by batch size."""
        return f"{self.prefix}:audit:{task_type}"

    def audit_types(self) -> str:
        """Set of task types the packing audit has samples of."""
        return f"{self.prefix}:audit:types"

    def packing_limits(self) -> str:
        """Hash task type -> maximum batch size lowered by the packing audit."""
        return f"{self.prefix}:packing:limits"

    def packing_sizes(self) -> str:
        """Hash `task type\x1fmodel:n` / `:out`: answered items and their output tokens."""
        return f"{self.prefix}:packing:sizes"

    def packing_events(self) -> str:
        """List of JSON events: a task type's maximum batch size came down, and why."""
        return f"{self.prefix}:packing:events"

    # response cache
    def cache_entry(self, cache_key: str) -> str:
        """Hash of one cached answer (exact key); expires with its TTL."""
        return f"{self.prefix}:cache:e:{cache_key}"

    def cache_intent(self, item_key: str) -> str:
        """Hash: how to cache an item's answer (key, TTL, semantic vector) once it comes."""
        return f"{self.prefix}:cache:intent:{item_key}"

    def cache_grey(self, item_key: str) -> str:
        """A pending item's grey-zone candidate (JSON), verified by the worker that runs it."""
        return f"{self.prefix}:cache:grey:{item_key}"

    def cache_verdict(self, digest: str) -> str:
        """A grey-zone verification's verdict for one pair of prompts (by digest): "1" or "0"."""
        return f"{self.prefix}:cache:verdict:{digest}"

    def cache_entries(self) -> str:
        """Sorted set `tenant\\x1fmodel\\x1fkey` -> expiry time: live entries per tenant, model."""
        return f"{self.prefix}:cache:entries"

    def cache_stats(self) -> str:
        """Hash `tenant\\x1fmodel\\x1fmetric` -> integer counter (money in nano-dollars)."""
        return f"{self.prefix}:cache:stats"

    def cache_vectors(self, scope_id: str) -> str:
        """Stream of (key, vector, prompt) of one semantic scope, read by every process."""
        return f"{self.prefix}:cache:v:{scope_id}"

    def call_intents(self, batch_id: str) -> str:
        """Hash call id -> intent of a batch's provider calls in flight (and `seq`, the last
        call number): what a re-run records for a call whose worker died (`inflight.py`)."""
        return f"{self.prefix}:batch:{batch_id}:calls"

    def cache_vset(self, scope_id: str) -> str:
        """Redis 8 vector set of one semantic scope: element = cache key, attributes = the
        prompt and its tenant."""
        return f"{self.prefix}:cache:vs:{scope_id}"

    def cache_vset_ages(self, scope_id: str) -> str:
        """Sorted set cache key -> time added, beside a scope's vector set: oldest out first."""
        return f"{self.prefix}:cache:va:{scope_id}"

    # the HTTP API (batchwise serve): every object lives under the tenant that owns it
    def server_file(self, tenant: str, file_id: str) -> str:
        """Hash of an uploaded or produced file: its metadata and `content`."""
        return f"{self.prefix}:srv:{tenant}:file:{file_id}"

    def server_files(self, tenant: str) -> str:
        """Sorted set file id -> creation time of a tenant's files."""
        return f"{self.prefix}:srv:{tenant}:files"

    def server_batch(self, tenant: str, batch_id: str) -> str:
        """Hash of an OpenAI-style batch (its run has the same id): `doc`, the batch object's
        JSON, and `rejected`, how many lines were refused when it was queued."""
        return f"{self.prefix}:srv:{tenant}:batch:{batch_id}"

    def server_batches(self, tenant: str) -> str:
        """Sorted set batch id -> creation time of a tenant's batches."""
        return f"{self.prefix}:srv:{tenant}:batches"

    def server_run(self, tenant: str, run_id: str) -> str:
        """Set when a tenant's key submitted the run; a run without it is not the tenant's."""
        return f"{self.prefix}:srv:{tenant}:run:{run_id}"

    def server_batch_lease(self, tenant: str, batch_id: str) -> str:
        """The lease of the server validating or finalizing a batch (pipeline/state/leases.py)."""
        return f"{self.prefix}:srv:{tenant}:batch:{batch_id}:lease"
