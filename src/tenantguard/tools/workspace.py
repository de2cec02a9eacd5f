"""A tenant's workspace for the filesystem tools (`self_hosted` only): every path a tool names
is relative to `<data_root>/orgs/<tenant_id>/workspace/` and cannot leave it.

A path is checked as text first (relative, no `..`, no empty or `.` part, no NUL, bounded),
then opened one component at a time from the workspace's own directory descriptor with
`O_NOFOLLOW`, so a symbolic link anywhere on the way (planted by anyone, at any time, even
between a check and a use) is refused by the kernel rather than followed. Only regular files
with one link are read or written (a FIFO would block, a device or a hard link to a file
elsewhere would leak). Reads and writes are bounded in size, and a write is atomic (a
temporary file renamed into place).

The whole workspace is bounded too: at most `max_bytes` in its files and `max_entries` files
and directories. Writes take an exclusive lock on the workspace (`flock` on its directory)
and count what is there, without following links, before they write: concurrent writes cannot
together pass a limit that each would alone. A write that would pass one is a 422
`workspace_full`, and nothing is written.

Threat stopped: a tool call escaping its tenant's files (`../../other-tenant`, absolute paths,
symlinks, hard links, devices), and a call filling the disk.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import secrets
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID

from tenantguard.errors import NotFound, RequestInvalid

MAX_PATH = 1024
MAX_PART = 255
MAX_FILE_BYTES = 1_048_576
MAX_WORKSPACE_BYTES = 100 * 1_048_576
MAX_WORKSPACE_ENTRIES = 10_000
_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class PathRefused(RequestInvalid):
    code = "path_refused"
    title = "Path refused"
    default_detail = "The path is not a file of this tenant's workspace."


class WorkspaceFull(RequestInvalid):
    code = "workspace_full"
    title = "Workspace full"
    default_detail = "This write would take the tenant's workspace over its limits."


def workspace_root(data_root: Path, tenant_id: UUID) -> Path:
    return data_root / "orgs" / str(tenant_id) / "workspace"


def parts_of(path: str) -> tuple[str, ...]:
    """The components of a relative path, or `PathRefused`."""
    if not path or len(path) > MAX_PATH or "\x00" in path or path.startswith("/"):
        raise PathRefused()
    parts = tuple(path.split("/"))
    if any(
        p in ("", ".", "..") or len(p.encode("utf-8", "surrogatepass")) > MAX_PART for p in parts
    ):
        raise PathRefused()
    if parts[-1].startswith(".tg-"):  # the names of our own temporary files
        raise PathRefused()
    return parts


@dataclass(frozen=True, slots=True)
class Usage:
    bytes: int
    entries: int


def _open_under(root: int, parts: tuple[str, ...]) -> int:
    """A descriptor of the directory `parts` under `root`, reached without following links."""
    fd = os.dup(root)
    try:
        for part in parts:
            inner = os.open(part, _DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = inner
    except BaseException:
        os.close(fd)
        raise
    return fd


def _usage(root: int, *, stop_after: int) -> Usage:
    """The bytes of the regular files and the number of entries under the directory `root`,
    links not followed; counting stops past `stop_after` entries (already over the limit).
    Directories wait as names, not open descriptors: one is open at a time, however wide or
    deep the tree. One that vanishes or turns into a link meanwhile is not counted."""
    total, entries = 0, 0
    pending: list[tuple[str, ...]] = [()]
    while pending:
        parts = pending.pop()
        try:
            fd = _open_under(root, parts)
        except OSError:  # removed, or replaced by a link, since it was listed
            continue
        try:
            with os.scandir(fd) as listing:
                for entry in listing:
                    entries += 1
                    if entries > stop_after:
                        return Usage(total, entries)
                    try:
                        info = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    if stat.S_ISREG(info.st_mode):
                        total += info.st_size
                    elif stat.S_ISDIR(info.st_mode):
                        pending.append((*parts, entry.name))
        finally:
            os.close(fd)
    return Usage(total, entries)


@dataclass(frozen=True, slots=True)
class Workspace:
    root: Path
    max_bytes: int = MAX_WORKSPACE_BYTES
    max_entries: int = MAX_WORKSPACE_ENTRIES

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[int]:
        """The workspace's root, locked against other writers (made, 0700, if missing)."""
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.root, _DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield fd
        finally:
            os.close(fd)  # releases the lock

    def usage(self) -> Usage:
        try:
            fd = os.open(self.root, _DIRECTORY)
        except FileNotFoundError:
            return Usage(0, 0)
        try:
            return _usage(fd, stop_after=self.max_entries)
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def _directory(self, parts: tuple[str, ...], *, create: bool) -> Iterator[int]:
        """A descriptor of the directory holding the last of `parts`, reached without
        following any link (made, 0700, when `create`)."""
        if create:
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            fd = os.open(self.root, _DIRECTORY)
        except FileNotFoundError as exc:
            raise NotFound() from exc
        try:
            for part in parts[:-1]:
                if create:
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(part, 0o700, dir_fd=fd)
                try:
                    inner = os.open(part, _DIRECTORY, dir_fd=fd)
                except FileNotFoundError as exc:
                    raise NotFound() from exc
                except OSError as exc:  # ELOOP (a link), ENOTDIR (a file)
                    raise PathRefused() from exc
                os.close(fd)
                fd = inner
            yield fd
        finally:
            os.close(fd)

    def read(self, path: str, *, limit: int = MAX_FILE_BYTES) -> bytes:
        parts = parts_of(path)
        with self._directory(parts, create=False) as directory:
            try:
                flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
                fd = os.open(parts[-1], flags, dir_fd=directory)
            except FileNotFoundError as exc:
                raise NotFound() from exc
            except OSError as exc:
                raise PathRefused() from exc
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
                os.close(fd)
                raise PathRefused()
            with os.fdopen(fd, "rb") as handle:
                data = handle.read(limit + 1)
        if len(data) > limit:
            raise RequestInvalid(f"The file is larger than {limit} bytes.")
        return data

    def write(self, path: str, data: bytes, *, limit: int = MAX_FILE_BYTES) -> int:
        if len(data) > limit:
            raise RequestInvalid(f"At most {limit} bytes are written at once.")
        parts = parts_of(path)
        with self._exclusive() as root:
            self._fits(root, parts, len(data))
            return self._write(parts, data)

    def _fits(self, root: int, parts: tuple[str, ...], size: int) -> None:
        """Refuse unless writing `size` bytes at `parts` keeps the workspace in its limits
        (counted as if every directory on the way and the file were new: never under)."""
        used = _usage(root, stop_after=self.max_entries)
        if used.entries + len(parts) > self.max_entries or used.bytes + size > self.max_bytes:
            # A file replaced frees its old size: counted, so that a full workspace can still
            # rewrite a file in place, but only when it is there and plain.
            replaced = self._replaced_size(parts)
            over_entries = used.entries + (0 if replaced is not None else len(parts))
            freed = replaced or 0
            if over_entries > self.max_entries or used.bytes - freed + size > self.max_bytes:
                raise WorkspaceFull()

    def _replaced_size(self, parts: tuple[str, ...]) -> int | None:
        try:
            with self._directory(parts, create=False) as directory:
                info = os.stat(parts[-1], dir_fd=directory, follow_symlinks=False)
        except (NotFound, PathRefused, FileNotFoundError):
            return None
        return info.st_size if stat.S_ISREG(info.st_mode) and info.st_nlink == 1 else None

    def _write(self, parts: tuple[str, ...], data: bytes) -> int:
        with self._directory(parts, create=True) as directory:
            try:  # what is there now must be a plain file of ours, or nothing
                info = os.stat(parts[-1], dir_fd=directory, follow_symlinks=False)
            except FileNotFoundError:
                info = None
            if info is not None and (not stat.S_ISREG(info.st_mode) or info.st_nlink != 1):
                raise PathRefused()
            temporary = f".tg-{secrets.token_hex(8)}.tmp"
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(temporary, flags, 0o600, dir_fd=directory)
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.rename(temporary, parts[-1], src_dir_fd=directory, dst_dir_fd=directory)
            except OSError as exc:
                with contextlib.suppress(OSError):
                    os.unlink(temporary, dir_fd=directory)
                if exc.errno in (errno.EISDIR, errno.ENOTDIR):
                    raise PathRefused() from exc
                raise
        return len(data)
