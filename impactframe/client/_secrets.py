"""Keeping the API key secret: where it comes from, where it may be sent, how it is masked.

The key is resolved and checked before anything is sent (SPEC §6), held in a `_Secret` whose
``repr`` hides it, and masked in every message built from a response. A base URL is accepted
only if the key cannot leave in clear text by accident: plain ``http`` is refused for a
non-loopback host unless the caller passes ``allow_insecure=True`` (SPEC §10).
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
from urllib.parse import urlsplit, urlunsplit

from .._constants import ENV_API_KEY, ENV_BASE_URL, ENVIRONMENTS
from .._params import reject

_LOOPBACK_NAMES = frozenset({"localhost", "localhost."})


class _Secret:
    """Holds the API key so that ``repr``, ``vars`` and debuggers show ``***`` instead."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get(self) -> str:
        return self._value

    def redact(self, text: str) -> str:
        """`text` with the key replaced by ``***`` (the API may echo it in an error body)."""
        return text.replace(self._value, "***")

    def __repr__(self) -> str:
        return "_Secret('***')"


def _fingerprint(base_url: str, key: str) -> str:
    """A short, stable id of (base URL, key) that reveals neither.

    The first 16 hex digits of ``sha256(base_url + "\\n" + key)``: the cache folder name of a
    `Client` and the Dask token of a key, so it must never change for a given pair.
    """
    return hashlib.sha256(f"{base_url}\n{key}".encode()).hexdigest()[:16]


def _resolve_api_key(api_key: object) -> str:
    if api_key is None:
        api_key = os.environ.get(ENV_API_KEY) or None
    if api_key is None:
        msg = f"No API key: pass api_key= or set the {ENV_API_KEY} environment variable"
        raise ValueError(msg)
    if not isinstance(api_key, str):
        msg = f"api_key: expected a str or None (then {ENV_API_KEY} is read), "
        msg += f"got {type(api_key).__name__}"
        raise ValueError(msg)
    key = api_key.strip()
    # The key goes into a header; requests would echo a malformed value in its own error.
    if not key or any(not (0x21 <= ord(ch) <= 0x7E) for ch in key):
        msg = (
            f"api_key (or {ENV_API_KEY}) is empty or holds spaces, control or non-ASCII "
            "characters; expected the key exactly as issued (its value is not shown)"
        )
        raise ValueError(msg)
    return key


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


# A host name, an IPv4 address or an IPv6 literal: no spaces, controls or URL delimiters.
_HOST_RE = re.compile(r"[A-Za-z0-9._~%:-]+")


def _normalize_base_url(url: object, *, allow_insecure: bool) -> str:
    accepted = "expected an http(s) URL with a host, e.g. 'https://api.1clickimpact.com'"
    if not isinstance(url, str):
        msg = f"base_url: {url!r} is not accepted; {accepted}"
        raise ValueError(msg)
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname
        port = parts.port
    except ValueError as exc:  # e.g. a port that is not a number, a broken IPv6 literal
        msg = f"base_url: {url!r} is not accepted ({exc}); {accepted}"
        raise ValueError(msg) from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not host or not _HOST_RE.fullmatch(host):
        msg = f"base_url: {url!r} is not accepted; {accepted}"
        raise ValueError(msg)
    if parts.username is not None or parts.password is not None:
        msg = "base_url: credentials in the URL are not accepted; pass the key as api_key="
        raise ValueError(msg)
    if parts.query or parts.fragment:
        msg = f"base_url: {url!r} has a query or fragment; {accepted}"
        raise ValueError(msg)
    if scheme == "http" and not allow_insecure and not _is_loopback(host):
        msg = (
            f"base_url: {url!r} is plain http to a non-loopback host, which would send the API "
            "key in clear text; expected https (http only for localhost/127.0.0.0/8/::1), or "
            "pass allow_insecure=True"
        )
        raise ValueError(msg)
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc = f"{netloc}:{port}"
    return urlunsplit((scheme, netloc, parts.path.rstrip("/"), "", ""))


def _resolve_base_url(base_url: str | None, environment: str, allow_insecure: object) -> str:
    """The checked base URL: `base_url`, else ``IMPACTFRAME_BASE_URL``, else `environment`'s."""
    if base_url is None:
        base_url = os.environ.get(ENV_BASE_URL) or ENVIRONMENTS[environment]
    if not isinstance(allow_insecure, bool):
        reject("allow_insecure", allow_insecure, "True or False")
    return _normalize_base_url(base_url, allow_insecure=allow_insecure)
