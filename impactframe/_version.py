"""The installed version of impactframe, read once from the package metadata."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

__all__ = ["package_version"]


def package_version() -> str:
    """The installed version of impactframe, or ``"0.0.0"`` when it was never installed.

    Read from the package metadata rather than from ``impactframe.__version__``: the
    package's ``__init__`` imports the modules that need it (the client, the cache).

    Examples
    --------
    >>> isinstance(package_version(), str)
    True
    """
    try:
        return version("impactframe")
    except PackageNotFoundError:  # a source tree that was never installed
        return "0.0.0"
