"""Files the CLI writes (results, dashboards, ledger exports): all or nothing, in a dir that exists.

A file is written beside its destination as `NAME.part` and renamed over it only when complete;
on any failure the `.part` file is removed, so a reader never sees half a file and nothing is
left behind. A destination whose directory is missing is refused before any work starts.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from pipeline.errors import InputError


def check_destination(path: Path) -> None:
    """Refuse, with what to do, a path that cannot receive a file."""
    parent = path.parent
    if not parent.is_dir():
        raise InputError(
            f"directory {str(parent)!r} does not exist; create it or choose another path",
            where=str(path),
        )
    if path.is_dir():
        raise InputError("is a directory; give a file name", where=str(path))


@contextlib.contextmanager
def writing(path: Path, mode: str = "wb", **options: Any) -> Iterator[IO[Any]]:
    """Open `path.part` for writing; rename it to `path` when the block ends without error."""
    check_destination(path)
    tmp = path.with_name(path.name + ".part")
    try:
        with tmp.open(mode, **options) as fh:
            yield fh
        tmp.replace(path)
    except OSError as exc:
        raise InputError(f"cannot write: {exc.strerror or exc}", where=str(path)) from None
    finally:
        tmp.unlink(missing_ok=True)
