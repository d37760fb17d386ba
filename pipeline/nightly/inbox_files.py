"""File operations for a directory other users can write to (the nightly inbox), done relative
to directory descriptors so no symlink planted there is ever followed:

- directories are opened with O_NOFOLLOW and refused when they are a symlink or not a directory;
- files are created with O_CREAT | O_EXCL | O_NOFOLLOW, so an existing name (a planted symlink,
  another pass's file) is never written through;
- names are claimed by creating them exclusively, and moves never replace an existing name.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from pipeline.errors import ConfigError

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def open_dir(
    path: Path, *, parent_fd: int | None = None, mode: int = 0o755, follow: bool = False
) -> int:
    """Create `path` (relative to `parent_fd` if given) when missing and open it; a symlink
    (unless `follow`: a path the operator configured) or anything but a directory is refused."""
    if parent_fd is None:
        path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, mode, dir_fd=parent_fd)
    try:
        return os.open(path, DIR_FLAGS | (0 if follow else os.O_NOFOLLOW), dir_fd=parent_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise ConfigError(
                f"{path} is a symlink or not a directory; refusing to use it: remove it "
                "(the next pass creates the directory)"
            ) from None
        raise


def entry_kind(dir_fd: int, name: str) -> str | None:
    """'file' for a regular file, else what it is ('symlink', 'directory', 'special file');
    None when it is gone. Never follows a symlink."""
    try:
        mode = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
    except FileNotFoundError:
        return None
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISLNK(mode):
        return "symlink"
    return "directory" if stat.S_ISDIR(mode) else "special file"


@contextlib.contextmanager
def create(dir_fd: int, name: str, mode: int = 0o644) -> Iterator[BinaryIO]:
    """A new file opened for writing; FileExistsError when the name is taken, whatever it is."""
    with os.fdopen(os.open(name, NEW_FILE_FLAGS, mode, dir_fd=dir_fd), "wb") as fh:
        yield fh


def claim(dir_fd: int, names: Sequence[Sequence[str]]) -> Sequence[str]:
    """The first group of names that could all be created (empty) in `dir_fd`: a name claimed
    this way is this caller's, however many passes look for a free one at the same time."""
    for group in names:
        made: list[str] = []
        try:
            for name in group:
                with create(dir_fd, name):
                    made.append(name)
            return group
        except FileExistsError:
            for name in made:
                os.unlink(name, dir_fd=dir_fd)
    raise ConfigError(f"no free name among {[list(g) for g in names]}")


@contextlib.contextmanager
def replacing(dir_fd: int, name: str, tag: str) -> Iterator[BinaryIO]:
    """Write a file under a private temporary name, then rename it over `name` (which the
    caller claimed): readers see the old content or the whole new one, never a part."""
    part = f".{name}.{tag}.part"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(part, dir_fd=dir_fd)  # left by an earlier attempt with this tag
    try:
        with create(dir_fd, part) as fh:
            yield fh
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(part, dir_fd=dir_fd)
        raise
    os.replace(part, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)


def move(src_fd: int, name: str, dst_fd: int, targets: Sequence[str]) -> str:
    """Move `name` to the first of `targets` still free in `dst_fd` (claimed, then renamed
    over), so two passes never move two files to one name. Returns the name it got."""
    (target,) = claim(dst_fd, [[t] for t in targets])
    os.rename(name, target, src_dir_fd=src_fd, dst_dir_fd=dst_fd)
    return target
