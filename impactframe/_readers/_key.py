"""The API key as a reader's task graph carries it: picklable, never shown."""

from __future__ import annotations

from ..client._secrets import _fingerprint

__all__ = ["HiddenKey"]


class HiddenKey:
    """The API key, picklable, shown as ``***`` and tokenized by its fingerprint only.

    The token must still differ between keys: a shared scheduler reuses results by task
    name, and one account must never be handed another account's partitions.
    """

    __slots__ = ("_fingerprint", "_value")

    def __init__(self, value: str, base_url: str) -> None:
        self._value = value
        self._fingerprint = _fingerprint(base_url, value)

    def get(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "HiddenKey('***')"

    def __dask_tokenize__(self) -> tuple[str, str]:
        return ("impactframe-key", self._fingerprint)

    def __getstate__(self) -> tuple[str, str]:
        return self._value, self._fingerprint

    def __setstate__(self, state: tuple[str, str]) -> None:
        self._value, self._fingerprint = state
