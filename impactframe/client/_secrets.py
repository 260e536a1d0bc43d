"""Keeping the API key secret: where it comes from, where it may be sent, how it is masked.

The key is resolved and checked before anything is sent (SPEC §6), held in a `_Secret` whose
``repr`` hides it, and masked in every message built from a response. A base URL is accepted
only if the key cannot leave in clear text by accident: plain ``http`` is refused for a
non-loopback host unless the caller passes ``allow_insecure=True`` (SPEC §10).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import re
from collections.abc import Mapping
from urllib.parse import urlsplit, urlunsplit

from .._constants import ENV_API_KEY, ENV_BASE_URL, ENVIRONMENTS
from .._params import reject

__all__ = ["MASK_ANYWHERE_LENGTH", "MaskedKey", "direct_proxies"]

_LOOPBACK_NAMES = frozenset({"localhost", "localhost."})


class MaskedKey(str):
    """The key as a ``str`` whose ``repr``, ``str`` and ``format`` show ``***``.

    It is the value of the key header itself, so every mapping that holds the header (ours,
    ``requests``' prepared request, urllib3's) shows ``{'x-api-key': '***'}`` in a traceback that
    records local variables (Sentry, ``rich``, IPython verbose mode, ``pytest -l``). Sending is
    unaffected: ``http.client`` writes ``value.encode("latin-1")``, which reads the characters.
    ``str.encode`` (and ``==``, hashing, ``in``) still see the real key: use them, never
    ``str()`` or an f-string, where the key itself is meant.

    Examples
    --------
    >>> key = MaskedKey("sk-123")
    >>> repr(key), str(key), f"{key}", {"x-api-key": key}
    ("'***'", '***', '***', {'x-api-key': '***'})
    >>> key == "sk-123", key.encode()
    (True, b'sk-123')
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return "'***'"

    def __str__(self) -> str:
        return "***"

    def __format__(self, spec: str) -> str:
        return "***"

    def __reduce__(self) -> tuple[type[MaskedKey], tuple[str]]:
        return (MaskedKey, (self.encode().decode(),))


#: A key at least this long is masked wherever it appears, even inside a longer word: it will not
#: occur in a message by chance. A shorter one (a test key, "k") is masked only where it stands
#: alone, so that ``"net"`` does not turn ``"network"`` into ``"***work"``.
MASK_ANYWHERE_LENGTH = 12
# What a key is made of in context: characters that would make a match part of a longer token.
_TOKEN_CHAR = r"A-Za-z0-9_\-"


class _Secret:
    """Holds the API key so that ``repr``, ``str``, ``vars`` and debuggers show ``***``.

    `get` returns a `MaskedKey`: the key travels to the header without ever being a plain
    ``str`` in a frame's locals.
    """

    __slots__ = ("_forms", "_value")

    def __init__(self, value: str) -> None:
        self._value = MaskedKey(value)
        # The key as sent, and as a JSON body would escape it (a quote or a backslash); kept as
        # `MaskedKey` too, so that nothing here shows the key.
        escaped = json.dumps(value.encode().decode())[1:-1]
        self._forms = tuple({self._value, MaskedKey(escaped)})

    def get(self) -> MaskedKey:
        return self._value

    def redact(self, text: str) -> str:
        """`text` with the key replaced by ``***`` (the API may echo it in an error body).

        A long key is masked wherever it occurs; one shorter than `MASK_ANYWHERE_LENGTH` only
        as a whole token (not inside a word). Mask first, shorten after: see `shorten`.

        Examples
        --------
        >>> key = "sk-live-0123456789"
        >>> _Secret(key).redact(f"bad key {key}, x={key}z")
        'bad key ***, x=***z'
        >>> _Secret("net").redact("network error for key net.")
        'network error for key ***.'
        """
        for form in self._forms:
            if len(form) >= MASK_ANYWHERE_LENGTH:
                text = text.replace(form, "***")
            else:  # compiled on use (errors only), so no pattern object holds the key
                escaped = re.escape(form.encode().decode())
                text = re.sub(f"(?<![{_TOKEN_CHAR}]){escaped}(?![{_TOKEN_CHAR}])", "***", text)
        return text

    def shorten(self, text: str, limit: int) -> str:
        """`text` masked, then cut to `limit` characters (never the other way round)."""
        return self.redact(text)[:limit]

    def __repr__(self) -> str:
        return "_Secret('***')"

    __str__ = __repr__


def direct_proxies(session_proxies: Mapping[str, str], url: str) -> dict[str, str | None] | None:
    """Per-request ``proxies=`` that keep a loopback URL away from the environment's proxies.

    ``requests`` sends ``http://127.0.0.1`` through ``HTTP_PROXY``/``ALL_PROXY`` when they are
    set (``NO_PROXY`` aside), which hands the key to whatever listens there, in clear text. For a
    loopback host every key `select_proxy` would look at is given explicitly: the session's own
    ``proxies`` entry where it has one (a proxy the caller chose on purpose), else ``None``,
    which ``requests`` drops after the environment's values were *not* filled in. For any other
    host: None, so ``requests`` applies the environment as usual (a corporate HTTPS proxy).

    Examples
    --------
    >>> direct_proxies({}, "http://127.0.0.1:8000/v1/records")["http"] is None
    True
    >>> direct_proxies({"http": "http://gw:3128"}, "http://localhost:1/x")["http"]
    'http://gw:3128'
    >>> direct_proxies({}, "https://api.1clickimpact.com/v1/records") is None
    True
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    if not _is_loopback(host):
        return None
    keys = (f"{parts.scheme}://{host}", parts.scheme, f"all://{host}", "all")
    return {key: session_proxies.get(key) for key in keys}


def _fingerprint(base_url: str, key: str) -> str:
    """A short, stable id of (base URL, key) that reveals neither.

    The first 16 hex digits of ``sha256(base_url + "\\n" + key)``: the cache folder name of a
    `Client` and the Dask token of a key, so it must never change for a given pair.
    """
    # Bytes, not an f-string: a `MaskedKey` formats as "***".
    return hashlib.sha256(base_url.encode() + b"\n" + key.encode()).hexdigest()[:16]


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
