"""A pytest plugin that sends the official SDK's requests to a local sandbox instead of its host.

``tests/test_sdk_suite.py`` runs the SDK's own test file (``makeimpact`` 2.0.0, installed as the
top-level package ``tests``) in a child pytest with ``-p sdk_host_redirect`` and this folder on
``PYTHONPATH``. The SDK has no base-URL option and builds its URLs from a literal in
``OneClickImpact.__init__``; its mocked tests assert those URLs. So nothing of the SDK is
patched: only the transport is, below ``requests``. A request to ``SDK_HOST`` goes to the
sandbox named by ``IMPACTFRAME_SDK_SANDBOX_URL`` with path and query unchanged; a request to
any other host is refused, so the suite can never reach the internet (its production host
included).
"""

from __future__ import annotations

import os
from typing import Any

import pytest

#: The host the SDK's ``Environment.SANDBOX`` talks to.
SDK_HOST = "https://sandbox.1clickimpact.com"
#: The variable naming the local sandbox's base URL, e.g. ``http://127.0.0.1:49152``.
ENV_TARGET = "IMPACTFRAME_SDK_SANDBOX_URL"


def redirected(url: str, target: str) -> str:
    """``url`` on ``target`` instead of the SDK's host; ``ConnectionError`` for other hosts.

    Parameters
    ----------
    url : str
        The URL ``requests`` is about to send.
    target : str
        The sandbox's base URL.

    Examples
    --------
    >>> redirected("https://sandbox.1clickimpact.com/v1/records?limit=1", "http://127.0.0.1:9")
    'http://127.0.0.1:9/v1/records?limit=1'
    >>> redirected("https://api.1clickimpact.com/v1/whoami", "http://127.0.0.1:9")
    Traceback (most recent call last):
    ...
    requests.exceptions.ConnectionError: refused by sdk_host_redirect: only \
https://sandbox.1clickimpact.com/ is served (locally), not https://api.1clickimpact.com/v1/whoami
    """
    import requests

    if not url.startswith(SDK_HOST + "/"):
        msg = f"refused by sdk_host_redirect: only {SDK_HOST}/ is served (locally), not {url}"
        raise requests.ConnectionError(msg)
    return target.rstrip("/") + url[len(SDK_HOST) :]


def pytest_configure(config: pytest.Config) -> None:
    """Patch ``HTTPAdapter.send``, under every ``requests`` session the SDK opens."""
    from requests.adapters import HTTPAdapter

    target = os.environ[ENV_TARGET]
    original = HTTPAdapter.send

    def send(self: HTTPAdapter, request: Any, **kwargs: Any) -> Any:
        request = request.copy()
        request.url = redirected(request.url, target)
        kwargs["proxies"] = {}  # loopback, never through a proxy from the environment
        return original(self, request, **kwargs)

    HTTPAdapter.send = send  # type: ignore[method-assign]
