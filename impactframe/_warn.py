"""Warnings pointed at the user's line, whatever the depth of the call inside impactframe."""

from __future__ import annotations

import os
import sys
import warnings

__all__ = ["caller_stacklevel", "warn_at_caller"]

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
