"""The ledger archive: entries older than the retention window move to Parquet files, once.

Redis keeps the ledger's recent entries (the stream), the id guard and the rollups that reports
read; older entries live in `ledger_archive_dir` as Parquet files, one directory per UTC day of
writing, so Redis memory stays flat however long the ledger grows. `batchwise report` reads the
rollups, which stay; `batchwise ledger export` reads the archive, then the stream.

Archiving goes chunk by chunk, in stream order, each chunk within one day:

1. read the entries after the *mark* (the last archived stream id) and older than the cut-off;
2. write them to `DAY/FIRST_LAST.parquet` (a temporary file, fsynced, then renamed into place);
3. move the mark to LAST and, in the same atomic step, take the chunk's per-user rollup detail
   out of Redis (`detail.py`: written beside the chunk in step 2, read back by reports);
4. trim the stream up to the mark and drop the chunk's ids from the id guard.

A crash anywhere loses and duplicates nothing: before 2 the chunk is simply read again; between
2 and 3 the file of a chunk starting at FIRST already exists, so the next pass adopts it (its
name says where it ends) instead of writing another; after 3 readers skip the stream up to the
mark, and the next pass trims what is left. One archiver runs at a time (a lease).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
from redis.asyncio import Redis

from pipeline.costs.detail import (
    FOLDER,
    Subtract,
    chunk_detail,
    file_id,
    from_file_id,
    id_key,
    read_detail_file,
    write_detail,
)
from pipeline.costs.rollup import Counts, Journal
from pipeline.keys import Keys
from pipeline.state.leases import Lease

SCHEMA = pa.schema(
    [
        ("stream_id", pa.string()),
        ("type", pa.string()),
        ("id", pa.string()),
        ("at", pa.float64()),
        ("tenant", pa.string()),
        ("model", pa.string()),
        ("provider", pa.string()),
        ("cost_usd", pa.decimal128(38, 12)),
        ("saved_nusd", pa.int64()),
        ("json", pa.string()),  # the entry as written: the archive's source of truth
    ]
)
LEASE_TTL_S = 60.0
ZERO_ID = "0-0"


@dataclass(frozen=True)
class Archived:
    """What one pass moved: entries, files written, and the stream id archived up to."""

    entries: int
    files: int
    mark: str


class LedgerArchive:
    """Moves old ledger entries from the Redis stream to Parquet files and reads them back."""

    def __init__(self, redis: Redis, keys: Keys, root: Path, *, chunk: int = 10_000) -> None:
        self.redis = redis
        self.keys = keys
        self.root = root
        self.chunk = chunk
        self._subtract = Subtract(redis, keys)

    async def mark(self) -> str:
        """The stream id up to which entries are archived (`0-0`: none)."""
        raw = await self.redis.get(self.keys.ledger_archive_mark())
        return raw.decode() if raw else ZERO_ID

    async def run(
        self,
        older_than_s: float,
        *,
        now: float | None = None,
        after_write: Callable[[], None] | None = None,
    ) -> Archived | None:
        """Archive every entry written more than `older_than_s` ago; None when another
        archiver holds the lease. `after_write` runs after each file lands (tests crash there)."""
        lease = Lease(self.redis, self.keys.ledger_archive_lease(), LEASE_TTL_S)
        if not await lease.acquire():
            return None
        try:
            cutoff_ms = int(((now if now is not None else _now()) - older_than_s) * 1000)
            entries = files = 0
            mark = await self.mark()
            await self._forget(mark, [])  # a crash after moving the mark left the trim undone
            while True:
                rows = await self._next_chunk(mark, cutoff_ms)
                if not rows:
                    return Archived(entries, files, mark)
                rows, wrote, ids, detail = await asyncio.to_thread(self._write, rows)  # off loop
                files += wrote
                if after_write is not None:
                    after_write()
                # the chunk's counters must all be in their hashes before its detail leaves them
                await Journal(self.redis, self.keys).fold(drain=True)
                if not await self._subtract(mark, rows[-1][0], self.root, detail):
                    return Archived(entries, files, mark)  # the lease was lost: the other goes on
                mark = rows[-1][0]
                await self._forget(mark, ids)
                entries += len(rows)
        finally:
            await lease.release()

    async def _next_chunk(self, mark: str, cutoff_ms: int) -> list[tuple[str, bytes]]:
        """The next entries after `mark` written before the cut-off, all of one UTC day."""
        raw = await self.redis.xrange(
            self.keys.ledger(), min="(" + mark, max=str(cutoff_ms - 1), count=self.chunk
        )
        rows = [(entry_id.decode(), _blob(fields)) for entry_id, fields in raw]
        rows = [(i, b) for i, b in rows if b]
        if not rows:
            return []
        day = _day_of(rows[0][0])
        return [r for r in rows if _day_of(r[0]) == day]

    def _write(
        self, rows: list[tuple[str, bytes]]
    ) -> tuple[list[tuple[str, bytes]], int, list[str], dict[str, Counts]]:
        """Write a chunk's detail file, then its file, or adopt the files an interrupted pass
        wrote for the same first entry (then the chunk ends where that file ends). Returns the
        chunk, the files written, the chunk's ids in the ledger's id guard and its detail."""
        first = rows[0][0]
        folder = self.root / _day_of(first).isoformat()
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        done = sorted(folder.glob(f"{file_id(first)}_*.parquet"))
        if done:
            last = from_file_id(done[0].stem.split("_", 1)[1])
            rows = [r for r in rows if id_key(r[0]) <= id_key(last)]
            detail = read_detail_file(folder / FOLDER / done[0].name)
            return rows, 0, [_guard_id(blob) for _, blob in rows], detail
        name = f"{file_id(first)}_{file_id(rows[-1][0])}.parquet"
        for orphan in (folder / FOLDER).glob(f"{file_id(first)}_*.parquet"):
            orphan.unlink()  # a pass that died before its chunk's file: that chunk ends here
        detail = chunk_detail(self.keys, (blob for _, blob in rows))
        write_detail(folder / FOLDER / name, detail)
        path = folder / name
        tmp = path.with_suffix(".parquet.part")
        table = _table(rows)
        pq.write_table(table, tmp, compression="zstd")
        with tmp.open("rb") as fh:
            os.fsync(fh.fileno())
        tmp.replace(path)
        with contextlib.suppress(OSError):  # make the rename itself durable where we can
            fd = os.open(folder, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        kinds, ids = table.column("type").to_pylist(), table.column("id").to_pylist()
        guard = [i if k == "call" else f"s:{i}" for k, i in zip(kinds, ids, strict=True)]
        return rows, 1, guard, detail

    async def _forget(self, mark: str, ids: list[str]) -> None:
        """Trim the stream up to `mark` and drop archived ids from the id guard."""
        if mark == ZERO_ID:
            return
        ms, seq = mark.split("-")
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xtrim(self.keys.ledger(), minid=f"{ms}-{int(seq) + 1}", approximate=False)
            if ids:
                pipe.srem(self.keys.ledger_ids(), *ids)
            await pipe.execute()

    def files(self, since: date | None = None, until: date | None = None) -> list[Path]:
        """The archive's files in stream order, limited to the days written between the two."""
        if not self.root.is_dir():
            return []
        out = []
        for folder in sorted(self.root.iterdir()):
            try:
                day = date.fromisoformat(folder.name)
            except ValueError:
                continue
            if (since and day < since) or (until and day > until) or not folder.is_dir():
                continue
            out += sorted(
                folder.glob("*.parquet"),
                key=lambda p: id_key(from_file_id(p.stem.split("_", 1)[0])),
            )
        return out

    async def raw_entries(self) -> AsyncIterator[dict[str, Any]]:
        """Every archived entry as plain JSON data with its `type`, oldest first."""
        for path in self.files():
            for batch in pq.ParquetFile(path).iter_batches(columns=["type", "json"]):
                for kind, blob in zip(
                    batch.column(0).to_pylist(), batch.column(1).to_pylist(), strict=True
                ):
                    data: dict[str, Any] = orjson.loads(blob)
                    data["type"] = kind
                    yield data


def _table(rows: list[tuple[str, bytes]]) -> pa.Table:
    columns: dict[str, list[Any]] = {name: [] for name in SCHEMA.names}
    for stream_id, blob in rows:
        entry = orjson.loads(blob[1:])
        is_call = blob[:1] == b"r"
        columns["stream_id"].append(stream_id)
        columns["type"].append("call" if is_call else "saving")
        columns["id"].append(str(entry.get("id", "")))
        columns["at"].append(float(entry.get("at", 0.0)))
        columns["tenant"].append(entry.get("tenant"))
        columns["model"].append(entry.get("model"))
        columns["provider"].append(entry.get("provider"))
        cost = entry.get("cost_usd") if is_call else None
        columns["cost_usd"].append(None if cost is None else Decimal(str(cost)))
        columns["saved_nusd"].append(None if is_call else entry.get("saved_nusd"))
        columns["json"].append(blob[1:].decode())
    return pa.table(columns, schema=SCHEMA)


def _blob(fields: dict[bytes, bytes]) -> bytes:
    """An entry as one tagged blob: `r` + call record JSON, or `s` + saving JSON."""
    if b"r" in fields:
        return b"r" + fields[b"r"]
    if b"s" in fields:
        return b"s" + fields[b"s"]
    return b""


def _guard_id(blob: bytes) -> str:
    """The id an entry holds in the ledger's id guard (savings are kept apart by a prefix)."""
    entry_id = str(orjson.loads(blob[1:])["id"])
    return entry_id if blob[:1] == b"r" else f"s:{entry_id}"


def _day_of(stream_id: str) -> date:
    return datetime.fromtimestamp(id_key(stream_id)[0] / 1000, tz=UTC).date()


def _now() -> float:
    return datetime.now(tz=UTC).timestamp()
