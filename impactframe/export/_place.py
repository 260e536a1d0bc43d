"""Atomic placement of a finished export, and clean-up after runs that were killed.

The dataset is built in a temporary sibling folder ``<name>.tmp-<run>`` and renamed to its
path only once complete, so a failed export leaves nothing there that looks finished. An old
dataset is swapped out atomically (``renameat2(RENAME_EXCHANGE)`` on Linux; elsewhere it is
renamed aside first), so a process killed at any moment leaves the old complete dataset or the
new one. Each run holds a lock file ``<name>.tmp-<run>.lock`` from before its temporary folder
exists until after it is gone; the next export of the same path removes the folders of runs
whose lock is free (killed), never those of a run still going.

A finished dataset carries a marker file of ours, ``_impactframe.json`` (package version,
endpoint, query, partitioning and every file written). ``overwrite=True`` replaces only a
folder that holds this marker and nothing but the files it lists (`check_target`): a folder of
the user's, the working folder, the home folder or a filesystem root is refused before any
request, and checked again just before the swap, so nothing impactframe did not write is
ever deleted.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import logging
import os
import re
import shutil
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .._fs import lock_file, unlock_file
from .._version import package_version

__all__ = ["MARKER", "check_target", "dataset_files", "is_our_dataset", "write_marker"]

logger = logging.getLogger("impactframe")

#: The file that marks a folder as a dataset impactframe wrote (readers skip ``_`` names).
MARKER = "_impactframe.json"
#: Files of ours besides the data files that the marker lists.
_SIDECARS = frozenset({MARKER, "_common_metadata", "_metadata"})

#: What a run keeps beside ``<name>``: its lock file ``.tmp-<run>.lock``, its temporary folder
#: ``.tmp-<run>`` and, while it swaps datasets without an atomic exchange, ``.old-<run>``.
_LEFTOVER = re.compile(r"\.(tmp|old)-([0-9a-f]{32})(\.lock)?")

#: Windows cannot unlink a file held open, so runs there take no lock and leave no cleanup.
_NO_RUN_LOCKS = sys.platform == "win32"


# -- the marker and the target checks ------------------------------------------------------------


def write_marker(root: Path, description: dict[str, Any], files: Iterable[str]) -> None:
    """Write the marker of a finished dataset: what wrote it, for which query, which files."""
    marker = {
        "written_by": "impactframe",
        "package_version": package_version(),
        **description,
        "files": sorted(files),
    }
    text = json.dumps(marker, indent=1, ensure_ascii=False, default=str)
    (root / MARKER).write_text(text + "\n", encoding="utf-8")


def dataset_files(folder: Path) -> list[str] | None:
    """The data files (POSIX paths) the marker of `folder` lists; ``None`` if not our dataset."""
    try:
        marker = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(marker, dict) or marker.get("written_by") != "impactframe":
        return None
    files = marker.get("files")
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        return None
    return files


def _stranger(folder: Path) -> str | None:
    """The first thing in `folder` that impactframe's marker does not account for, if any.

    ``"(no marker)"`` when `folder` holds anything but no marker of ours.
    """
    listed = dataset_files(folder)
    known = set(listed or ())
    for root, dirs, names in os.walk(folder):
        here = Path(root)
        relative = here.relative_to(folder).as_posix()
        for name in sorted(dirs):
            if (here / name).is_symlink() or "=" not in name or listed is None:
                return (here / name).relative_to(folder).as_posix() + "/"
        for name in sorted(names):
            path = f"{relative}/{name}" if relative != "." else name
            if listed is None:
                return "(no marker)" if name != MARKER else "(an unreadable marker)"
            if path not in known and not (relative == "." and name in _SIDECARS):
                return path
    return None


def is_our_dataset(folder: Path) -> bool:
    """True if `folder` is empty, or a dataset impactframe wrote and nothing else.

    Examples
    --------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> is_our_dataset(folder)
    True
    >>> _ = (folder / "notes.md").write_text("mine")
    >>> is_our_dataset(folder)
    False
    """
    return _stranger(folder) is None


def _protected(target: Path) -> str | None:
    """Why `target` may never be replaced (the working folder, home, a root...), if it may not."""
    resolved = target.resolve()
    if resolved.parent == resolved or Path(resolved.anchor) == resolved:
        return "it is a filesystem root"
    places = [(Path.cwd().resolve(), "the current working folder")]
    with contextlib.suppress(RuntimeError, KeyError):  # no home folder known
        places.append((Path.home().resolve(), "the home folder"))
    for place, name in places:
        if resolved == place:
            return f"it is {name}"
    for place, name in places:
        if resolved in place.parents:
            return f"it holds {name}"
    return None


def check_target(path: object, overwrite: object) -> Path:
    """Check an export's `path` and `overwrite` before any request; return the absolute path.

    Parameters
    ----------
    path : str or os.PathLike
        The dataset folder to create, or to replace when `overwrite`.
    overwrite : bool

    Returns
    -------
    pathlib.Path

    Raises
    ------
    ValueError
        Naming `path`: not a path; a file, a symlink or a protected folder (the working
        folder, the home folder, a filesystem root, or one holding them) at `path`; an
        existing folder without `overwrite`, or one that is not a dataset impactframe wrote;
        a parent that is a file, or a folder this process cannot write in.

    Examples
    --------
    >>> check_target(".", overwrite=True)
    Traceback (most recent call last):
    ...
    ValueError: path: '.' cannot be replaced: it is the current working folder; nothing was deleted
    """
    if not isinstance(path, str | os.PathLike) or str(path) == "":
        msg = f"path: {path!r} is not accepted; expected a folder path (str or os.PathLike)"
        raise ValueError(msg)
    if not isinstance(overwrite, bool):
        msg = f"overwrite: {overwrite!r} is not accepted; expected True or False"
        raise ValueError(msg)
    shown = repr(str(path))
    target = Path(path).expanduser().absolute()
    why = _protected(target)
    if why is not None:
        msg = f"path: {shown} cannot be replaced: {why}; nothing was deleted"
        raise ValueError(msg)
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        msg = f"path: {shown} exists and is not a folder; expected a new folder or a dataset"
        raise ValueError(msg)
    if target.exists():
        if not overwrite:
            msg = (
                f"path: {shown} already exists; pass overwrite=True to replace a dataset "
                "impactframe wrote"
            )
            raise ValueError(msg)
        stranger = _stranger(target)
        if stranger is not None:
            msg = (
                f"path: {shown} is not a dataset impactframe wrote (found {stranger}); "
                f"overwrite only replaces a folder marked with {MARKER} and holding only its "
                "files, so nothing was deleted: choose a new folder"
            )
            raise ValueError(msg)
    _check_parent(target, shown)
    return target


def _check_parent(target: Path, shown: str) -> None:
    """The nearest existing folder above `target` must be a folder this process can write in."""
    ancestor = target.parent
    while not ancestor.exists() and not ancestor.is_symlink() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        msg = f"path: {shown} cannot be created: {str(ancestor)!r} is a file, not a folder"
        raise ValueError(msg)
    if not os.access(ancestor, os.W_OK | os.X_OK):
        msg = f"path: {shown} cannot be created: no permission to write in {str(ancestor)!r}"
        raise ValueError(msg)


# -- the temporary folder, locks and the swap ---------------------------------------------------


def _remove_tree(folder: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(folder)


def _lock_path(target: Path, run_id: str) -> Path:
    return target.with_name(f"{target.name}.tmp-{run_id}.lock")


def _hold_run_lock(target: Path, run_id: str) -> int | None:
    """Create and lock this run's lock file, before its temporary folder exists."""
    if _NO_RUN_LOCKS:  # pragma: no cover - no stale-folder cleanup on Windows
        return None
    return lock_file(_lock_path(target, run_id))


def _release_run_lock(target: Path, run_id: str, fd: int | None) -> None:
    """Unlink the lock file while still holding it, then let go."""
    if fd is None:  # pragma: no cover - Windows
        return
    with contextlib.suppress(FileNotFoundError):
        _lock_path(target, run_id).unlink()
    unlock_file(fd)


def _remove_stale(target: Path) -> None:
    """Remove what exports of `target` killed mid-way left beside it, never a live run's.

    A run's lock file is locked before its folders exist and until they are gone; the kernel
    releases the lock of a killed process, so a lock that can be taken marks a dead run.
    """
    if _NO_RUN_LOCKS:  # pragma: no cover - Windows
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
            fd = lock_file(lock_path, wait=False)
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
            unlock_file(fd)


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
    if not target.exists() and not target.is_symlink():
        temporary.rename(target)
        return
    if not overwrite:
        msg = f"path: {str(target)!r} appeared during the export; pass overwrite=True to replace it"
        raise FileExistsError(msg)
    # Checked again: the user may have put files there since the export started.
    stranger = None if target.is_dir() and not target.is_symlink() else "(not a folder)"
    stranger = stranger or _stranger(target)
    if stranger is not None:
        msg = (
            f"path: {str(target)!r} changed during the export and is no longer only a dataset "
            f"impactframe wrote (found {stranger}); it was left as it is"
        )
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
