"""Disk helpers of the Parquet cache: the root folder, private folders, entry locks and atomic
writes.

Folders the cache creates are ``0700`` and its files ``0600`` whatever the umask; a folder
that already exists (``cache="."``, a group-shared folder, ``/tmp``, a symlink's target) keeps
its mode. An entry's lock is a re-entrant
thread lock plus a file lock (``flock``, ``msvcrt.locking`` on Windows), so threads and
processes take turns. A file is written to a synced temporary file in the same folder and
renamed over the old one, so a reader sees the old file or the new one, never a mix.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import sys
import tempfile
import threading
from collections.abc import Iterator

from .._constants import ENV_CACHE_DIR

_DIR_MODE = 0o700
_FILE_MODE = 0o600


# -- folders and permissions ---------------------------------------------------------------------


def _make_private_dir(path: pathlib.Path) -> None:
    """Create `path` (and missing parents) as ``0700`` whatever the umask; leave existing ones.

    Parents this call creates are ``0700`` too: ``mkdir(parents=True)`` would give them the
    umask's mode (``0777`` under umask 0), and a writable parent lets others swap the cache.
    A folder that exists already is the user's (``/tmp`` with its sticky bit, a group-shared
    ``2775`` folder, the target of a symlink): its mode is never changed.
    """
    missing = []
    parent = path.parent
    while parent != parent.parent and not parent.exists() and not parent.is_symlink():
        missing.append(parent)
        parent = parent.parent
    for folder in (*reversed(missing), path):
        try:
            folder.mkdir(mode=_DIR_MODE)
        except FileExistsError:  # the user's, or made meanwhile by another process
            if not folder.is_dir():
                raise
            continue
        _chmod_created(folder)


def _chmod_created(folder: pathlib.Path) -> None:
    """Make a folder this process just created ``0700``, never following a symlink put there."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(folder, flags)
    except OSError:  # pragma: no cover - Windows cannot open folders; mkdir's mode stands
        return
    try:
        with contextlib.suppress(AttributeError):  # os.fchmod: POSIX only
            os.fchmod(fd, _DIR_MODE)
    finally:
        os.close(fd)


def resolve_cache_dir(cache: bool | str | os.PathLike[str], *, create: bool = True) -> pathlib.Path:
    """Return the cache root folder for the loaders' ``cache=`` argument, creating it.

    Parameters
    ----------
    cache : True, str or os.PathLike
        ``True``: ``$IMPACTFRAME_CACHE_DIR`` when set, else the platform's user cache folder
        (``platformdirs.user_cache_dir("impactframe")``). A path: that folder.
    create : bool, default True
        Create the folder (``0700``) if missing. ``False`` only names it: ``impactframe cache list``
        must not leave an empty cache folder behind.

    Returns
    -------
    pathlib.Path
        The folder, existing if `create`; ``0700`` if this call created it (an existing
        folder keeps its mode).

    Raises
    ------
    ValueError
        If `cache` is ``False`` or an empty string, or the folder cannot be made or used (a
        file is in the way, no permission): the loaders raise it before any request.

    Examples
    --------
    >>> import tempfile
    >>> root = resolve_cache_dir(tempfile.mkdtemp() + "/cache")
    >>> oct(root.stat().st_mode & 0o777)
    '0o700'
    """
    path, source = _cache_path(cache)
    if not create:
        return path
    try:
        _make_private_dir(path)
    except OSError as exc:
        # A bad argument, not a disk failure: say which argument and what it accepts.
        blocker = next((p for p in (path, *path.parents) if p.exists()), None)
        if blocker is not None and not blocker.is_dir():
            why = f"{str(blocker)!r} is a file, not a folder"
        else:
            why = str(exc.strerror or exc)
        msg = (
            f"{source}: {str(path)!r} cannot be used as the cache folder ({why}); expected a "
            "folder path (created if missing), True (the default cache folder) or False "
            "(no cache)"
        )
        raise ValueError(msg) from exc
    return path


def _cache_path(cache: object) -> tuple[pathlib.Path, str]:
    """The folder `cache` names and how to call it in an error message."""
    if cache is True:
        env = os.environ.get(ENV_CACHE_DIR)
        if env:
            return pathlib.Path(env).expanduser(), f"cache=True (${ENV_CACHE_DIR})"
        import platformdirs

        path = pathlib.Path(platformdirs.user_cache_dir("impactframe"))
        return path, "cache=True (the user cache folder)"
    if isinstance(cache, str | os.PathLike) and not isinstance(cache, bool) and str(cache):
        return pathlib.Path(cache).expanduser(), "cache"
    msg = f"cache: {cache!r} is not accepted; expected True or a folder path"
    raise ValueError(msg)


# -- locks ---------------------------------------------------------------------------------------

if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _lock_fd(fd: int) -> None:
        # LK_LOCK retries for about 10 s, then raises: keep waiting like flock does.
        while True:
            try:
                msvcrt.locking(fd, msvcrt.LK_LOCK, 1)
                return
            except OSError:
                continue

    def _unlock_fd(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _lock_fd(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_EX)

    def _unlock_fd(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)


def _open_locked(path: pathlib.Path) -> int:
    """Open and lock `path`; retry if `clear` unlinked it meanwhile (so one inode is locked)."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, _FILE_MODE)
        try:
            with contextlib.suppress(AttributeError, PermissionError):  # fchmod: POSIX only
                os.fchmod(fd, _FILE_MODE)
            _lock_fd(fd)
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(path))
            except FileNotFoundError:
                same = False
        except BaseException:
            os.close(fd)
            raise
        if same:
            return fd
        _unlock_fd(fd)
        os.close(fd)


class _KeyLock:
    """One entry's lock: a re-entrant thread lock plus a file lock held while depth > 0.

    ``flock`` locks belong to an open file, not a thread, so threads of one process are kept
    apart by the RLock; the file lock keeps processes apart.
    """

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path
        self.rlock = threading.RLock()
        self.depth = 0
        self.fd: int | None = None

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        with self.rlock:
            if self.depth == 0:
                _make_private_dir(self.path.parent)
                self.fd = _open_locked(self.path)
            self.depth += 1
            try:
                yield
            finally:
                self.depth -= 1
                if self.depth == 0 and self.fd is not None:
                    fd, self.fd = self.fd, None
                    try:
                        _unlock_fd(fd)
                    finally:
                        os.close(fd)


_KEY_LOCKS: dict[str, _KeyLock] = {}
_KEY_LOCKS_GUARD = threading.Lock()


def _key_lock(path: pathlib.Path) -> _KeyLock:
    name = os.path.abspath(path)
    with _KEY_LOCKS_GUARD:
        lock = _KEY_LOCKS.get(name)
        if lock is None:
            lock = _KEY_LOCKS[name] = _KeyLock(pathlib.Path(name))
        return lock


# -- atomic files --------------------------------------------------------------------------------


def _fsync_dir(path: pathlib.Path) -> None:
    if sys.platform == "win32":  # pragma: no cover - directories cannot be opened there
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: pathlib.Path, data: bytes) -> None:
    """Write `data` to `path` (mode 0600): a synced temporary file in the same folder, renamed."""
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            with contextlib.suppress(AttributeError):
                os.fchmod(handle.fileno(), _FILE_MODE)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)
