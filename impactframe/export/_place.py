"""Atomic placement of a finished export, and clean-up after runs that were killed.

The dataset is built in a temporary sibling folder ``<name>.tmp-<run>`` and renamed to its
path only once complete, so a failed export leaves nothing there that looks finished. An old
dataset is swapped out atomically (``renameat2(RENAME_EXCHANGE)`` on Linux; elsewhere it is
renamed aside first), so a process killed at any moment leaves the old complete dataset or the
new one. Each run holds a lock file ``<name>.tmp-<run>.lock`` from before its temporary folder
exists until after it is gone; the next export of the same path removes the folders of runs
whose lock is free (killed), never those of a run still going.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any

logger = logging.getLogger("impactframe")

#: What a run keeps beside ``<name>``: its lock file ``.tmp-<run>.lock``, its temporary folder
#: ``.tmp-<run>`` and, while it swaps datasets without an atomic exchange, ``.old-<run>``.
_LEFTOVER = re.compile(r"\.(tmp|old)-([0-9a-f]{32})(\.lock)?")

if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
    fcntl: Any = None
else:
    import fcntl


def _remove_tree(folder: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(folder)


def _lock_path(target: Path, run_id: str) -> Path:
    return target.with_name(f"{target.name}.tmp-{run_id}.lock")


def _lock(path: Path, *, wait: bool) -> int | None:
    """Open and lock `path` (created if missing); ``None`` if held elsewhere and not `wait`.

    Retries until the locked file is the one at `path`: a cleaner may unlink the name between
    our open and our lock, and a lock on an unlinked file protects nothing.
    """
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            if wait:
                raise
            return None
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)


def _hold_run_lock(target: Path, run_id: str) -> int | None:
    """Create and lock this run's lock file, before its temporary folder exists."""
    if fcntl is None:  # pragma: no cover - no stale-folder cleanup on Windows
        return None
    return _lock(_lock_path(target, run_id), wait=True)


def _release_run_lock(target: Path, run_id: str, fd: int | None) -> None:
    """Unlink the lock file while still holding it, then let go."""
    if fd is None:  # pragma: no cover - Windows
        return
    with contextlib.suppress(FileNotFoundError):
        _lock_path(target, run_id).unlink()
    os.close(fd)


def _remove_stale(target: Path) -> None:
    """Remove what exports of `target` killed mid-way left beside it, never a live run's.

    A run's lock file is locked before its folders exist and until they are gone; the kernel
    releases the lock of a killed process, so a lock that can be taken marks a dead run.
    """
    if fcntl is None:  # pragma: no cover - Windows
        return
    try:
        siblings = list(target.parent.iterdir())
    except OSError:
        return
    for path in siblings:
        if not path.name.startswith(target.name):
            continue
        match = _LEFTOVER.fullmatch(path.name[len(target.name) :])
        if match is None or path.is_symlink():
            continue
        kind, run_id, is_lock = match[1], match[2], match[3] is not None
        if is_lock != (not path.is_dir()) or (is_lock and kind != "tmp"):
            continue
        if kind == "old" and not target.exists():
            # Killed between the two renames of a non-atomic swap: this is the only complete
            # copy of the old dataset; leave it to the user rather than delete it.
            logger.warning("an interrupted export left the previous dataset at %s", path)
            continue
        lock_path = _lock_path(target, run_id)
        try:
            fd = _lock(lock_path, wait=False)
        except OSError:
            continue
        if fd is None:  # a live export holds it
            continue
        try:
            logger.debug("removing %s, left by an interrupted export", path)
            if not is_lock:
                _remove_tree(path)
            with contextlib.suppress(FileNotFoundError):
                lock_path.unlink()
        finally:
            os.close(fd)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``).

    Returns False when the platform or the file system cannot, so the caller falls back.
    """
    if sys.platform != "linux":
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # no libc symbol (glibc < 2.28, musl < 1.2.4)
        return False
    int_, path_ = ctypes.c_int, ctypes.c_char_p
    renameat2.argtypes = [int_, path_, int_, path_, ctypes.c_uint]
    renameat2.restype = ctypes.c_int
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EXDEV):
        return False
    raise OSError(code, os.strerror(code), str(a), None, str(b))


def _place(temporary: Path, target: Path, overwrite: bool, run_id: str) -> None:
    """Put the finished dataset at `target`; an old dataset is replaced, never merged.

    Readers (and a crash) see the old complete dataset or the new one: the two folders are
    exchanged atomically where the platform can; elsewhere the old one is renamed aside first.
    """
    if not target.exists():
        temporary.rename(target)
        return
    if not overwrite:
        msg = f"path: {str(target)!r} appeared during the export; pass overwrite=True to replace it"
        raise FileExistsError(msg)
    if _exchange(temporary, target):
        aside = temporary  # now holds the old dataset
    else:
        aside = target.with_name(f"{target.name}.old-{run_id}")
        target.rename(aside)
        try:
            temporary.rename(target)
        except BaseException:
            aside.rename(target)
            raise
    try:
        _remove_tree(aside)
    except OSError as exc:
        # The new dataset is in place; a leftover old copy is not worth failing the export.
        logger.warning("could not remove the replaced dataset %s: %s", aside, exc)
