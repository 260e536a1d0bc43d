"""Keyed pseudonyms for customer columns before a frame leaves the building (SPEC §10).

A plain hash of an e-mail address is not a pseudonym: anyone can hash a list of candidate
addresses and compare. HMAC-SHA256 keyed with a secret salt is, as long as the salt stays
secret, while still mapping one address to one pseudonym so exports can be joined and counted.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

import numpy as np
import pandas as pd
import pyarrow as pa

from ._params import reject
from .aggregate import C

__all__ = ["DEFAULT_COLUMNS", "pseudonymize"]

#: Columns replaced when ``columns`` is not given (skipped when the frame lacks them).
DEFAULT_COLUMNS: tuple[str, ...] = (C.customer_email, C.customer_name)
#: Readable prefixes, so a pseudonym still says what it stands for.
PREFIXES: dict[str, str] = {
    C.customer_email: "email_",
    C.customer_name: "name_",
    C.customer_id: "cust_",
}
DEFAULT_PREFIX = "anon_"
#: Hex digits kept: 64 bits, so collisions are negligible below billions of customers.
DIGEST_CHARS = 16


def _key(salt: object) -> bytes:
    if isinstance(salt, str) and salt:
        return salt.encode("utf-8")
    if isinstance(salt, bytes | bytearray) and salt:
        return bytes(salt)
    # The salt is a secret: only its type is shown, never its value.
    shown = f"a value of type {type(salt).__name__} (not echoed)"
    reject("salt", salt, "a non-empty str or bytes", shown=shown)


def _pseudonym(key: bytes, prefix: str, value: object) -> str:
    digest = hmac.new(key, str(value).encode("utf-8"), hashlib.sha256).hexdigest()
    return prefix + digest[:DIGEST_CHARS]


def _pseudonymize_column(col: pd.Series, key: bytes, prefix: str) -> pd.Series:
    # Hash each distinct value once; NA (code -1) stays NA.
    codes, uniques = pd.factorize(col)
    hashed = np.array([_pseudonym(key, prefix, u) for u in uniques] + [None], dtype=object)
    values = hashed[codes]  # code -1 picks the trailing None
    is_string = isinstance(col.dtype, pd.StringDtype) or (
        isinstance(col.dtype, pd.ArrowDtype)
        and (
            pa.types.is_string(col.dtype.pyarrow_dtype)
            or pa.types.is_large_string(col.dtype.pyarrow_dtype)
        )
    )
    dtype = col.dtype if is_string else pd.StringDtype()
    return pd.Series(pd.array(values, dtype=dtype), index=col.index, name=col.name)


def pseudonymize(
    df: pd.DataFrame, *, salt: str | bytes, columns: Sequence[str] | None = None
) -> pd.DataFrame:
    """A copy of ``df`` whose customer columns hold stable keyed pseudonyms.

    Each value becomes a readable prefix plus the first 16 hex digits of
    HMAC-SHA256(salt, value): ``customer_email`` → ``"email_…"``, ``customer_name`` →
    ``"name_…"``, ``customer_id`` → ``"cust_…"``, any other column → ``"anon_…"``. Values are
    hashed verbatim (no case folding), so the same value maps to the same pseudonym in every
    frame and column hashed with the same salt, and to a different one under another salt.
    Missing values stay missing. ``customer_id`` is the API's opaque id and is kept unless
    listed in ``columns``.

    Parameters
    ----------
    df : pandas.DataFrame
        Any frame; customer records frames are the usual input.
    salt : str or bytes
        The secret key; keep it out of the export. Required and non-empty.
    columns : sequence of str, optional
        Columns to replace. ``None`` means ``("customer_email", "customer_name")``, skipping
        those ``df`` lacks, so a ``/v1/records`` frame comes back unchanged (as a copy).
        Columns listed explicitly must exist.

    Returns
    -------
    pandas.DataFrame
        A copy; ``df`` is never modified. Replaced columns keep a string dtype (Arrow-backed
        when they were).

    Raises
    ------
    ValueError
        If ``salt`` is empty or not str/bytes, or ``columns`` names a column ``df`` lacks.

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"customer_email": pd.array(["a@x.io", None], dtype="string")})
    >>> out = pseudonymize(df, salt="s3cret")
    >>> out["customer_email"].str.startswith("email_").tolist()
    [True, <NA>]
    >>> out.equals(pseudonymize(df, salt="s3cret"))
    True
    """
    if not isinstance(df, pd.DataFrame):
        reject("df", df, "a pandas DataFrame", shown=f"a value of type {type(df).__name__}")
    key = _key(salt)
    if columns is None:
        targets = [c for c in DEFAULT_COLUMNS if c in df.columns]
    else:
        targets = [columns] if isinstance(columns, str) else list(columns)
        missing = [c for c in targets if c not in df.columns]
        if missing:
            reject("columns", missing, f"columns of the frame ({list(df.columns)})")
    out = df.copy()
    for name in dict.fromkeys(targets):
        out[name] = _pseudonymize_column(df[name], key, PREFIXES.get(name, DEFAULT_PREFIX))
    return out
