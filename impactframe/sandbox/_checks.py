"""Argument checks of `SandboxServer` (each raises the library's one-wording ``ValueError``)."""

from __future__ import annotations

import contextlib
import ipaddress
import math

from .._params import check_choice, reject

__all__ = [
    "ENDPOINT_NAMES",
    "check_bool",
    "check_count",
    "check_endpoint",
    "check_host",
    "check_int",
    "is_number",
]

#: The records endpoints by name, as `SandboxServer` methods take them.
ENDPOINT_NAMES = ("records", "customer_records")


def is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def check_int(value: object, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        reject(name, value, "an int")


def check_count(value: object, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        reject(name, value, "an int >= 0")


def check_bool(value: object, name: str) -> None:
    if not isinstance(value, bool):
        reject(name, value, "True or False")


def check_endpoint(endpoint: str) -> str:
    return check_choice(endpoint, "endpoint", ENDPOINT_NAMES)


def check_host(host: object, allow_remote: bool) -> tuple[str, str]:
    """The host for URLs and the address to bind; loopback only unless ``allow_remote``."""
    if host == "localhost":
        return "127.0.0.1", "127.0.0.1"
    address = None
    if isinstance(host, str):  # ip_address() would also take an integer
        with contextlib.suppress(ValueError):
            address = ipaddress.ip_address(host)
    if address is None:
        reject("host", host, "an IP address or 'localhost'")
    if not address.is_loopback and not allow_remote:
        accepted = "a loopback address (127.0.0.1, ::1 or localhost), or allow_remote=True "
        accepted += "(CLI: --allow-remote) to serve other machines"
        reject("host", host, accepted)
    bind = str(address)
    if address.is_unspecified:  # listening everywhere: this machine reaches it on loopback
        return ("::1" if address.version == 6 else "127.0.0.1"), bind
    return bind, bind
