"""Per-user rollup detail: in Redis while its entries are in the stream, in the archive after.

Most rollup fields are bounded by the ledger's dimensions (models, tenants, endpoints), but the
per-user ones grow with every distinct (day or hour, user) pair: a day hash's `cost␟u␟USER` and
`items␟u␟USER`, and the hour-user and day-user hashes (`hu`, `du`) that explain anomalies. These
are the *detail*. When the archiver moves a chunk of entries to Parquet it also writes the
chunk's share of the detail, summed (`DAY/users/FIRST_LAST.parquet`: key, field, amount), and
subtracts that share from Redis in the same atomic step that moves the archive's mark (a field
that reaches 0 is deleted, and an empty hash goes with it). Redis therefore holds the detail of
the entries still in the stream, and the archive that of the rest, so Redis memory stays flat
however many calls the ledger has seen.

A reader adds the two (`read_hashes`): it reads the hashes and the mark in one transaction, then
the detail of every chunk up to that mark from the archive (DuckDB), so it counts each record
once even while an archiver runs. A field is present when either side has it, as it would be in
the unarchived hash: a chunk's row is written for every field one of its records added to, even
when the sum over the chunk is 0.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import duckdb
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
from redis.asyncio import Redis

from pipeline.costs.rollup import SEP, Counts, call_counts
from pipeline.errors import ConfigError
from pipeline.keys import Keys
from pipeline.models import CallRecord

SCHEMA = pa.schema([("key", pa.string()), ("field", pa.string()), ("amount", pa.int64())])
FOLDER = "users"  # beside a day's chunk files: DAY/users/FIRST_LAST.parquet
USER_FIELD = f"{SEP}u{SEP}"
ZERO_ID = "0-0"

SUBTRACT = """
-- KEYS: the archive's mark, the archive's root, then the hashes
-- ARGV: the mark expected, the new mark, the root, JSON [[key index, {field: amount}], ...]
-- Moves the mark and subtracts the chunk's detail at once, only if nobody moved it first.
local mark = redis.call('GET', KEYS[1]) or '0-0'
if mark ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('SET', KEYS[2], ARGV[3])
for _, h in ipairs(cjson.decode(ARGV[4])) do
  local key = KEYS[h[1]]
  for f, v in pairs(h[2]) do
    if redis.call('HINCRBY', key, f, -tonumber(v)) == 0 then redis.call('HDEL', key, f) end
  end
end
return 1
"""


def _relative(keys: Keys, key: str) -> str:
    """A rollup key without the ledger's prefix (`d:20261101`, `hu:2026110114:t:acme`)."""
    return key[len(keys.ledger()) + 1 :]


def detail_of(keys: Keys, counts: dict[str, Counts]) -> dict[str, Counts]:
    """The per-user part of one record's rollup counters (zero amounts left out, as the
    rollups leave them out), by key relative to the ledger."""
    out: dict[str, Counts] = {}
    for key, fields in counts.items():
        rel = _relative(keys, key)
        if rel.startswith(("hu:", "du:")):
            kept = {f: n for f, n in fields.items() if n}
        elif rel.startswith("d:"):
            kept = {f: n for f, n in fields.items() if n and USER_FIELD in f}
        else:
            continue
        if kept:
            out[rel] = kept
    return out


def chunk_detail(keys: Keys, blobs: Iterable[bytes]) -> dict[str, Counts]:
    """The summed detail of a chunk's entries (tagged blobs: `r` + call JSON, `s` + saving
    JSON; savings have none). A field one record added to stays, even if the chunk sums to 0."""
    sums: dict[str, Counts] = {}
    for blob in blobs:
        if blob[:1] != b"r":
            continue
        counts, _hour, _start = call_counts(keys, CallRecord.model_validate_json(blob[1:]))
        for rel, fields in detail_of(keys, counts).items():
            into = sums.setdefault(rel, {})
            for name, amount in fields.items():
                into[name] = into.get(name, 0) + amount
    return sums


def write_detail(path: Path, sums: dict[str, Counts]) -> None:
    """Write a chunk's detail to `path` (temporary file, fsync, rename), sorted by key so that
    readers skip row groups of other keys."""
    rows = sorted((k, f, n) for k, fields in sums.items() for f, n in fields.items())
    table = pa.table(
        {
            "key": [r[0] for r in rows],
            "field": [r[1] for r in rows],
            "amount": [r[2] for r in rows],
        },
        schema=SCHEMA,
    )
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(".parquet.part")
    pq.write_table(table, tmp, compression="zstd", row_group_size=100_000)
    with tmp.open("rb") as fh:
        os.fsync(fh.fileno())
    tmp.replace(path)


def read_detail_file(path: Path) -> dict[str, Counts]:
    """A chunk's detail as written (an interrupted pass adopts it)."""
    if not path.exists():
        return {}  # a chunk archived before detail files existed: its detail stayed in Redis
    table = pq.read_table(path)
    sums: dict[str, Counts] = {}
    for key, name, amount in zip(
        table.column("key").to_pylist(),
        table.column("field").to_pylist(),
        table.column("amount").to_pylist(),
        strict=True,
    ):
        sums.setdefault(key, {})[name] = amount
    return sums


class Subtract:
    """Moves the archive's mark and takes a chunk's detail out of Redis, in one atomic step."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.keys = keys
        self._script = redis.register_script(SUBTRACT)

    async def __call__(self, expected: str, mark: str, root: Path, sums: dict[str, Counts]) -> bool:
        names = list(sums)
        counters = [[i + 3, {f: str(n) for f, n in sums[k].items()}] for i, k in enumerate(names)]
        keys = [
            self.keys.ledger_archive_mark(),
            self.keys.ledger_archive_root(),
            *(f"{self.keys.ledger()}:{rel}" for rel in names),
        ]
        args: list[str | bytes] = [expected, mark, str(root), orjson.dumps(counters)]
        return bool(await self._script(keys=keys, args=args))


def detail_files(root: Path, mark: str) -> list[Path]:
    """The detail files of every chunk archived up to `mark`, whose share left Redis (a file
    without its chunk's file is from a pass that died before writing that: not counted)."""
    if mark == ZERO_ID or not root.is_dir():
        return []
    limit = id_key(mark)
    return [
        path
        for path in sorted(root.glob(f"*/{FOLDER}/*.parquet"))
        if id_key(from_file_id(path.stem.split("_", 1)[1])) <= limit
        and (path.parent.parent / path.name).exists()
    ]


def archived_detail(files: Sequence[Path], wanted: Sequence[str]) -> dict[str, Counts]:
    """key → field → amount summed over `files`, for the relative keys in `wanted`."""
    if not files or not wanted:
        return {}
    with duckdb.connect() as db:
        db.register("wanted", pa.table({"key": sorted(set(wanted))}))
        rows = db.execute(
            "select key, field, sum(amount)::bigint from read_parquet(?) "
            "where key between ? and ? and key in (select key from wanted) group by key, field",
            [[str(p) for p in files], min(wanted), max(wanted)],
        ).fetchall()
    out: dict[str, Counts] = {}
    for key, name, amount in rows:
        out.setdefault(key, {})[name] = int(amount)
    return out


async def read_hashes(redis: Redis, keys: Keys, names: Sequence[str]) -> list[dict[str, int]]:
    """HGETALL of each rollup hash in `names`, plus its detail from the archive: every record
    counted once, archived or not."""
    async with redis.pipeline(transaction=True) as pipe:
        pipe.get(keys.ledger_archive_mark())
        pipe.get(keys.ledger_archive_root())
        for name in names:
            pipe.hgetall(name)
        raw_mark, raw_root, *rows = await pipe.execute()
    out = [{_text(k): int(v) for k, v in row.items()} for row in rows]
    if raw_mark is None or raw_root is None:
        return out
    root = Path(raw_root.decode())
    files = detail_files(root, raw_mark.decode())
    if not files:
        if not root.is_dir():
            raise ArchiveUnreadable(root)
        return out
    rel = [_relative(keys, name) for name in names]
    archived = await asyncio.to_thread(archived_detail, files, rel)
    for fields, name in zip(out, rel, strict=True):
        for field, amount in archived.get(name, {}).items():
            fields[field] = fields.get(field, 0) + amount
    return out


class ArchiveUnreadable(ConfigError):
    """The archive holds per-user figures a report needs, but its folder is not here."""

    def __init__(self, root: Path) -> None:
        super().__init__(
            f"the ledger archive at {root} is not readable from here, and per-user "
            "figures of archived entries live there; run the report where that folder is "
            "mounted (the ledger_archive_dir of the archiving workers)"
        )


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


def id_key(stream_id: str) -> tuple[int, int]:
    """A stream entry id (`ms-seq`) as a sortable pair."""
    ms, seq = stream_id.split("-")
    return int(ms), int(seq)


def file_id(stream_id: str) -> str:
    """A stream id as written in an archive file name (`_` separates the first and last)."""
    return stream_id.replace("-", ".")


def from_file_id(name_part: str) -> str:
    """The stream id of one part of an archive file name (`file_id` undone)."""
    return name_part.replace(".", "-")
