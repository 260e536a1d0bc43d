"""A GET through a ``requests`` session's own urllib3 pool, without requests' per-call work.

``Session.get`` spends about as long as the exchange itself on a loopback or LAN page:
merging settings from the environment (proxy variables are read and matched on every call),
preparing the request, hooks, cookies. When none of that can change the request, the client
sends it through the very connection pool the session's adapter would use, with the same
URL, headers, timeout, TLS settings and retry object, and turns urllib3's errors into the
``requests`` exceptions `HTTPAdapter.send` and `Response.iter_content` raise. Sessions with
their own adapter, auth, hooks, default params or cookies, and URLs that go through a proxy,
take ``session.get`` as before (`route` gives None or `usable` False).

Both routes read the body with `read_body`: urllib3's response (``Response.raw`` on the
``requests`` route) read in pieces, decoded as it comes (urllib3 >= 2.6 inflates at most the
piece asked for), and never past the cap.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from requests.cookies import extract_cookies_to_jar
from requests.models import PreparedRequest
from requests.sessions import merge_setting
from requests.structures import CaseInsensitiveDict
from requests.utils import requote_uri, select_proxy
from urllib3.exceptions import (
    ClosedPoolError,
    ConnectTimeoutError,
    DecodeError,
    MaxRetryError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
    ResponseError,
)
from urllib3.exceptions import HTTPError as _HTTPError
from urllib3.exceptions import InvalidHeader as _InvalidHeader
from urllib3.exceptions import ProxyError as _ProxyError
from urllib3.exceptions import SSLError as _SSLError
from urllib3.util import Timeout

from ._deadline import DeadlineAdapter

__all__ = ["BodyTooLarge", "Route", "open_pooled", "read_body", "read_pooled", "route", "usable"]

# Adapters whose ``send`` is HTTPAdapter's own: a subclass of the caller's may change anything.
_PLAIN_ADAPTERS = (HTTPAdapter, DeadlineAdapter)
# Pieces of a body of unknown length (chunked, compressed): the cap's granularity.
_PIECE = 256 * 1024


@dataclass(frozen=True)
class Route:
    """Where a pooled GET goes: the session's adapter and its merged TLS settings."""

    session: requests.Session
    adapter: HTTPAdapter
    base: PreparedRequest  # the base URL, for the pool lookup and cookies
    verify: Any
    cert: Any
    proxies: Mapping[str, str]


def route(
    session: requests.Session, url: str, proxies: Mapping[str, str | None] | None = None
) -> Route | None:
    """The pooled route to ``url``'s host, or None when it goes through a proxy.

    Reads the environment (proxy and CA-bundle variables) once, as ``session.get`` would on
    each call with the same per-request `proxies`; the client keeps the route for its lifetime.
    """
    wanted = dict(proxies) if proxies is not None else {}
    settings = session.merge_environment_settings(url, wanted, None, None, None)  # type: ignore[arg-type]
    adapter = session.get_adapter(url)
    if (
        not isinstance(adapter, HTTPAdapter)
        or type(adapter) not in _PLAIN_ADAPTERS
        or select_proxy(url, settings["proxies"]) is not None
    ):
        return None
    base = PreparedRequest()
    base.prepare(method="GET", url=url)
    return Route(session, adapter, base, settings["verify"], settings["cert"], settings["proxies"])


def usable(way: Route, url: str) -> bool:
    """Whether the session still sends ``url`` exactly as the pooled route would."""
    session = way.session
    return (
        session.auth is None
        and not session.params
        and not any(session.hooks.values())
        and not len(session.cookies)  # requests would send them: leave it to requests
        and session.get_adapter(url) is way.adapter
    )


def open_pooled(
    way: Route,
    url: str,
    params: Mapping[str, Any],
    headers: Mapping[str, str],
    timeout: float,
) -> Any:
    """Send the GET; return urllib3's unread response. Errors as `HTTPAdapter.send` raises."""
    query = PreparedRequest._encode_params(params)  # type: ignore[attr-defined]
    path = urlsplit(url).path or "/"
    target = requote_uri(f"{path}?{query}" if query else path)
    merged = merge_setting(
        CaseInsensitiveDict(headers), way.session.headers, dict_class=CaseInsensitiveDict
    )
    adapter = way.adapter
    pool = adapter.get_connection_with_tls_context(
        way.base, way.verify, proxies=way.proxies, cert=way.cert
    )
    adapter.cert_verify(pool, url, way.verify, way.cert)
    try:
        response = pool.urlopen(  # type: ignore[attr-defined]
            method="GET",
            url=target,
            body=None,
            headers=merged,
            redirect=False,
            assert_same_host=False,
            preload_content=False,
            decode_content=False,
            retries=adapter.max_retries,
            timeout=Timeout(connect=timeout, read=timeout),
            chunked=False,
        )
    # The mapping of HTTPAdapter.send, so that retries and messages are the same.
    except (ProtocolError, OSError) as err:
        raise requests.ConnectionError(err) from err
    except MaxRetryError as err:
        reason = err.reason
        if isinstance(reason, ConnectTimeoutError) and not isinstance(reason, NewConnectionError):
            raise requests.ConnectTimeout(err) from err
        if isinstance(reason, ResponseError):
            raise requests.exceptions.RetryError(err) from err
        if isinstance(reason, _ProxyError):
            raise requests.exceptions.ProxyError(err) from err
        if isinstance(reason, _SSLError):
            raise requests.exceptions.SSLError(err) from err
        raise requests.ConnectionError(err) from err
    except ClosedPoolError as err:
        raise requests.ConnectionError(err) from err
    except _ProxyError as err:
        raise requests.exceptions.ProxyError(err) from err
    except (_SSLError, _HTTPError) as err:
        if isinstance(err, _SSLError):
            raise requests.exceptions.SSLError(err) from err
        if isinstance(err, ReadTimeoutError):
            raise requests.ReadTimeout(err) from err
        if isinstance(err, _InvalidHeader):
            raise requests.exceptions.InvalidHeader(err) from err
        raise
    if "Set-Cookie" in response.headers:  # kept as Session.send does; then requests sends them
        request = PreparedRequest()
        request.prepare(method="GET", url=url, params=params, headers=merged)
        extract_cookies_to_jar(way.session.cookies, request, response)
    return response


def read_pooled(response: Any, size: int | None) -> bytes:
    """Read ``size`` bytes (None: the rest) of the decoded body; errors as ``iter_content``."""
    try:
        data: bytes = response.read(size, decode_content=True)
    except ProtocolError as err:
        raise requests.exceptions.ChunkedEncodingError(err) from err
    except DecodeError as err:
        raise requests.exceptions.ContentDecodingError(err) from err
    except ReadTimeoutError as err:
        raise requests.ConnectionError(err) from err
    except _SSLError as err:
        raise requests.exceptions.SSLError(err) from err
    return data


class BodyTooLarge(Exception):
    """The decoded body would pass the client's ``max_body_bytes``; nothing more is read."""

    def __init__(self, status: int, limit: int) -> None:
        self.status = status
        self.limit = limit
        super().__init__(f"HTTP {status}: body larger than {limit} bytes")


def read_body(response: Any, limit: int, chunks: list[bytes], head: int) -> None:
    """Read urllib3's ``response`` body, decoded, into ``chunks``; at most ``limit`` bytes.

    The first read is ``head`` bytes, so that the start of a body later cut short is kept
    (urllib3 drops a whole read on IncompleteRead). A plain body of known length over the cap
    is refused before reading it; one within is read in one go (the fast path); any other
    (chunked, compressed) in pieces, counting decoded bytes. Errors as `read_pooled` raises.
    Raises `BodyTooLarge`.
    """
    length = response.length_remaining  # None: chunked or unknown
    encoding = response.headers.get("Content-Encoding", "").strip().lower()
    plain = encoding in ("", "identity") and isinstance(length, int)
    if plain and length > limit:
        raise BodyTooLarge(response.status, limit)
    data = read_pooled(response, head)
    if not data:
        return
    chunks.append(data)
    if plain:  # the declared length bounds the read; urllib3 checks that it all arrives
        chunks.append(read_pooled(response, None))
        return
    total = len(data)
    while data:
        data = read_pooled(response, _PIECE)
        total += len(data)
        if total > limit:
            raise BodyTooLarge(response.status, limit)
        chunks.append(data)
