"""Which function answers which path, and with which method."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from urllib.parse import unquote

from . import _account, _actions, _projects, _records
from ._protocol import Call, Reply

__all__ = ["ROUTES", "resolve"]

Endpoint = Callable[[Call], Reply]

#: path -> (method, endpoint function)
ROUTES: dict[str, tuple[str, Endpoint]] = {
    "/v1/records": ("GET", _records.records),
    "/v1/customer_records": ("GET", _records.customer_records),
    "/v1/impact": ("GET", _account.impact),
    "/v1/impact/daily": ("GET", _account.daily_impact),
    "/v1/whoami": ("GET", _account.who_am_i),
    "/v1/customers": ("GET", _account.customers),
    "/v1/track": ("GET", _account.track),
    "/v1/projects": ("GET", _projects.projects),
    **{
        path: ("POST", functools.partial(_actions.make_impact, path=path))
        for path in _actions.IMPACT_ACTIONS
    },
    "/v1/cancel_impact": ("POST", _actions.cancel_impact),
}
_PROJECT = re.compile(r"/v1/projects/([^/]+)")
#: Every path, for the 404 message.
PATHS = (*ROUTES, "/v1/projects/{id}")


def resolve(path: str) -> tuple[str, Endpoint, tuple[str, ...]] | None:
    """The method, function and path arguments of ``path``; ``None`` when nothing serves it.

    Examples
    --------
    >>> resolve("/v1/projects/p-1")[0::2], resolve("/v1/nope")
    (('GET', ('p-1',)), None)
    """
    if path in ROUTES:
        method, endpoint = ROUTES[path]
        return method, endpoint, ()
    match = _PROJECT.fullmatch(path)
    if match is not None:
        return "GET", _projects.project, (unquote(match[1]),)
    return None
