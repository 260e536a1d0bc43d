"""Warnings pointed at the user's line, whatever the depth of the call inside impactframe."""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Iterable

__all__ = ["caller_stacklevel", "warn_all", "warn_at_caller"]

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def caller_stacklevel() -> int:
    """The ``stacklevel`` that points a warning, issued by the caller, at the first frame
    outside impactframe (a hard-coded depth breaks whenever a call chain changes).

    Examples
    --------
    >>> caller_stacklevel() >= 1
    True
    """
    frame, level = sys._getframe(1), 1
    while frame.f_back is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame, level = frame.f_back, level + 1
    return level


def warn_at_caller(message: str, category: type[Warning]) -> None:
    """Issue ``message`` as ``category``, attributed to the user's line.

    Examples
    --------
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     warn_at_caller("careful", UserWarning)
    >>> str(caught[0].message)
    'careful'
    """
    warnings.warn(message, category, stacklevel=caller_stacklevel())


def warn_all(messages: Iterable[tuple[str, type[Warning]]]) -> None:
    """Issue each ``(message, category)`` at the user's line: the one way a frame's findings
    (`impactframe._frame._drift.Findings.messages`) become warnings.

    Examples
    --------
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     warn_all([("a", UserWarning), ("b", UserWarning)])
    >>> [str(w.message) for w in caught]
    ['a', 'b']
    """
    for message, category in messages:
        warn_at_caller(message, category)
