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
        """Hash task id -> shaped task JSON (kept until the result is written)."""
        return f"{self.prefix}:run:{run_id}:tasks"

    def run_stats(self, run_id: str) -> str:
        """Hash of integer counters for the run summary (costs in nano-dollars)."""
        return f"{self.prefix}:run:{run_id}:stats"

    def runs(self) -> str:
        """Sorted set of run ids by creation time."""
        return f"{self.prefix}:runs"

    def task_run(self, task_id: str) -> str:
        """The latest run that holds a task id."""
        return f"{self.prefix}:taskrun:{task_id}"

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
        """The item's JSON; lives while the item is pending or in flight."""
        return f"{self.prefix}:item:{item_key}"

    def item_waiters(self, item_key: str) -> str:
        """List of `run_id\\x1ftask_id` refs that receive the item's answer."""
        return f"{self.prefix}:item:{item_key}:waiters"

    def item_cost(self, item_key: str) -> str:
        """Hash of accumulated attribution for the item: cost in nano-dollars and tokens."""
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

    def ledger_ids(self) -> str:
        """Set of recorded call ids: the ledger's idempotency guard."""
        return f"{self.prefix}:ledger:ids"

    # ledger rollups (issue 5): integer counters per hour and day, written with each record
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

    def ledger_hours(self) -> str:
        """Sorted set of hours that have records, scored by the hour's start (epoch s)."""
        return f"{self.prefix}:ledger:hours"
