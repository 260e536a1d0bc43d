"""The cache's root folder: where ``cache=`` points, created private (`impactframe._fs`).

Folders the cache creates are ``0700`` and its files ``0600`` whatever the umask; a folder
that already exists (``cache="."``, a group-shared folder, ``/tmp``, a symlink's target) keeps
its mode. Its locks and atomic writes are `impactframe._fs`'s too.
"""

from __future__ import annotations

import os
import pathlib

from .._constants import ENV_CACHE_DIR
from .._fs import private_dir

__all__ = ["resolve_cache_dir"]


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
        private_dir(path)
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
