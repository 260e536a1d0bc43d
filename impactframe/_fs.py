"""The one place impactframe touches the disk's guarantees: atomic files, private folders, locks.

- `atomic_output` / `atomic_write`: a file is written to a temporary file ``.tmp-<id>-<name>``
  in the same folder and renamed over the old one, so a reader (and a crash) sees the old file
  or the new one, never a mix. ``durable=True`` also syncs the file and its folder.
- `private_dir`: folders it creates are ``0700`` whatever the umask; a folder that already
  exists (``cache="."``, a group-shared folder, ``/tmp``, a symlink's target) keeps its mode.
- `lock_file` / `unlock_file`: an exclusive lock on a lock file (``flock``, ``msvcrt.locking``
  on Windows), always on the inode the name points at; `path_lock` adds a re-entrant thread
  lock on top, so threads and processes take turns; `folder_lock` locks a folder itself the
  same way (an export's refresh).
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
import sys
import threading
import uuid
from collections.abc import Iterator

__all__ = [
    "DIR_MODE",
    "FILE_MODE",
    "PathLock",
    "atomic_output",
    "atomic_write",
    "folder_lock",
    "lock_file",
    "path_lock",
    "private_dir",
    "unlock_file",
]

#: The mode of the folders and files impactframe creates for itself (the cache, lock files).
DIR_MODE = 0o700
FILE_MODE = 0o600


# -- folders -------------------------------------------------------------------------------------


def private_dir(path: pathlib.Path) -> None:
    """Create `path` (and missing parents) as ``0700`` whatever the umask; leave existing ones.

    Parents this call creates are ``0700`` too: ``mkdir(parents=True)`` would give them the
    umask's mode (``0777`` under umask 0), and a writable parent lets others swap the files.
    A folder that exists already is the user's (``/tmp`` with its sticky bit, a group-shared
    ``2775`` folder, the target of a symlink): its mode is never changed.

    Examples
    --------
    >>> import tempfile
    >>> base = pathlib.Path(tempfile.mkdtemp())
    >>> private_dir(base / "a" / "b")
    >>> oct((base / "a").stat().st_mode & 0o777), oct((base / "a" / "b").stat().st_mode & 0o777)
    ('0o700', '0o700')
    """
    missing = []
    parent = path.parent
    while parent != parent.parent and not parent.exists() and not parent.is_symlink():
        missing.append(parent)
        parent = parent.parent
    for folder in (*reversed(missing), path):
        try:
            folder.mkdir(mode=DIR_MODE)
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
            os.fchmod(fd, DIR_MODE)
    finally:
        os.close(fd)


# -- atomic files --------------------------------------------------------------------------------


def _fsync(path: pathlib.Path) -> None:
    if sys.platform == "win32" and path.is_dir():  # pragma: no cover - folders cannot be opened
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str], *, durable: bool = False) -> Iterator[pathlib.Path]:
    """Yield a temporary path beside `path`; rename it to `path` when the block succeeds.

    A reader never sees a half-written file, and a failure (or Ctrl-C) leaves any old file
    untouched and no temporary file behind. The folder must exist (none is created); the file
    gets whatever mode its writer gives it.

    Parameters
    ----------
    path : str or os.PathLike
        The final file.
    durable : bool, default False
        Sync the file before the rename and the folder after it (survives a power cut).

    Yields
    ------
    pathlib.Path
        Where to write: ``.tmp-<id>-<name>``, so it keeps `path`'s suffix for writers that
        look at it.

    Raises
    ------
    FileNotFoundError
        Naming `path`, when its folder does not exist.

    Examples
    --------
    >>> import tempfile
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "hello.txt"
    >>> with atomic_output(target) as tmp:
    ...     _ = tmp.write_text("hi")
    >>> target.read_text()
    'hi'
    """
    target = pathlib.Path(path)
    if not target.parent.is_dir():
        msg = f"path: {str(target)!r}: the folder {str(target.parent)!r} does not exist"
        raise FileNotFoundError(msg)
    temporary = target.with_name(f".tmp-{uuid.uuid4().hex[:12]}-{target.name}")
    try:
        yield temporary
        if durable:
            _fsync(temporary)
        os.replace(temporary, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
    if durable:
        _fsync(target.parent)


def atomic_write(
    path: str | os.PathLike[str],
    data: bytes | str,
    *,
    mode: int | None = FILE_MODE,
    durable: bool = True,
) -> None:
    """Write `data` to `path` atomically (`atomic_output`); synced unless ``durable=False``.

    Parameters
    ----------
    path : str or os.PathLike
    data : bytes or str
        ``str`` is written as UTF-8.
    mode : int or None, default 0o600
        The new file's mode, whatever the umask. ``None``: the mode of the file it replaces,
        or for a new file the umask's default (as ``Path.write_text`` would give).
    durable : bool, default True

    Examples
    --------
    >>> import tempfile
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "entry.json"
    >>> atomic_write(target, "{}")
    >>> target.read_text(), oct(target.stat().st_mode & 0o777)
    ('{}', '0o600')
    """
    target = pathlib.Path(path)
    body = data.encode() if isinstance(data, str) else data
    with atomic_output(target, durable=False) as temporary:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode or 0o666)
        with os.fdopen(fd, "wb") as handle:
            if mode is not None:
                with contextlib.suppress(AttributeError):  # os.fchmod: POSIX only
                    os.fchmod(handle.fileno(), mode)
            elif target.exists():
                shutil.copymode(target, temporary)
            handle.write(body)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
    if durable:
        _fsync(target.parent)


# -- locks ---------------------------------------------------------------------------------------

if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _lock_fd(fd: int, wait: bool) -> None:
        if not wait:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return
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

    def _lock_fd(fd: int, wait: bool) -> None:
        fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)

    def _unlock_fd(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)


def lock_file(path: pathlib.Path, *, wait: bool = True) -> int | None:
    """Open and lock `path` (created ``0600`` if missing); return the open descriptor.

    Retries until the locked file is the one at `path`: a cleaner may unlink the name between
    our open and our lock, and a lock on an unlinked file protects nothing. ``wait=False``
    returns ``None`` at once when another process holds the lock.

    Examples
    --------
    >>> import tempfile
    >>> name = pathlib.Path(tempfile.mkdtemp()) / "x.lock"
    >>> fd = lock_file(name)
    >>> unlock_file(fd)
    """
    return _lock_at(path, os.O_RDWR | os.O_CREAT, wait=wait)


def _lock_at(path: pathlib.Path, flags: int, *, wait: bool) -> int | None:
    """Open `path` with `flags` and lock it, until the locked inode is the one at `path`."""
    while True:
        fd = os.open(path, flags, FILE_MODE)
        try:
            if flags & os.O_CREAT:
                with contextlib.suppress(AttributeError, PermissionError):  # fchmod: POSIX only
                    os.fchmod(fd, FILE_MODE)
            try:
                _lock_fd(fd, wait)
            except OSError:
                if wait:
                    raise
                os.close(fd)
                return None
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


@contextlib.contextmanager
def folder_lock(path: pathlib.Path) -> Iterator[None]:
    """Hold the folder at `path` itself (its inode, locked) for the block; no lock on Windows.

    Whoever waits for it and then finds the folder swapped out (renamed aside, a new one at
    `path`) locks the new one, as `lock_file` does for a file.

    Examples
    --------
    >>> import tempfile
    >>> with folder_lock(pathlib.Path(tempfile.mkdtemp())):
    ...     pass
    """
    if sys.platform == "win32":  # pragma: no cover - a folder cannot be opened there
        yield
        return
    fd = _lock_at(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0), wait=True)
    assert fd is not None  # wait=True never gives up
    try:
        yield
    finally:
        unlock_file(fd)


def unlock_file(fd: int) -> None:
    """Let go of a lock `lock_file` took, and close its descriptor."""
    try:
        _unlock_fd(fd)
    finally:
        os.close(fd)


class PathLock:
    """One lock file's lock for the whole process: a re-entrant thread lock plus the file lock.

    ``flock`` locks belong to an open file, not a thread, so threads of one process are kept
    apart by the RLock; the file lock (held while the depth is above 0) keeps processes apart.
    Get it from `path_lock`, so every thread shares one per path.
    """

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path
        self.rlock = threading.RLock()
        self.depth = 0
        self.fd: int | None = None

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        """Hold the lock for the block (its folder created private if missing); re-entrant."""
        with self.rlock:
            if self.depth == 0:
                private_dir(self.path.parent)
                self.fd = lock_file(self.path)
            self.depth += 1
            try:
                yield
            finally:
                self.depth -= 1
                if self.depth == 0 and self.fd is not None:
                    fd, self.fd = self.fd, None
                    unlock_file(fd)


_PATH_LOCKS: dict[str, PathLock] = {}
_PATH_LOCKS_GUARD = threading.Lock()


def path_lock(path: pathlib.Path) -> PathLock:
    """The process's one `PathLock` for the lock file `path`.

    Examples
    --------
    >>> import tempfile
    >>> name = pathlib.Path(tempfile.mkdtemp()) / "entry.lock"
    >>> with path_lock(name).hold(), path_lock(name).hold():
    ...     path_lock(name).depth
    2
    """
    name = os.path.abspath(path)
    with _PATH_LOCKS_GUARD:
        lock = _PATH_LOCKS.get(name)
        if lock is None:
            lock = _PATH_LOCKS[name] = PathLock(pathlib.Path(name))
        return lock
