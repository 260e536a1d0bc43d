"""The HTTP client (public: ``impactframe.client.Client``).

`_client` holds `Client`: one pooled ``requests`` session, the key header, the retry loop and
`get_json`. Beside it: `_secrets` (the key and the base URL, checked; the key masked),
`_errors` (a failed exchange to the exception SPEC §4 names), `_retry` (the pure retry policy),
`_pooled` (the GET through the session's urllib3 pool on the hot path; the capped body read)
and `_deadline` (a total deadline per request, enforced by cutting the socket).
"""

from ._client import Client

__all__ = ["Client"]
