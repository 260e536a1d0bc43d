"""The account's own figures, and proof that a load is complete (SPEC §12).

- :func:`load_impact`: lifetime totals, split into the account's own impact and its customers'.
- :func:`load_daily_impact`: totals per UTC day, validated by :class:`DailyImpactSchema`.
- :func:`reconcile`: the records (loaded, or given as frames) against those figures; a
  :class:`Reconciliation` says where they differ.

Everything here is also exported from :mod:`impactframe`.
"""

from __future__ import annotations

from ._impact import load_daily_impact, load_impact
from ._reconcile import Reconciliation, reconcile
from ._schema import DailyImpactSchema

__all__ = [
    "DailyImpactSchema",
    "Reconciliation",
    "load_daily_impact",
    "load_impact",
    "reconcile",
]
