"""Regenerate the Parquet samples of data-samples/ (see README.md there), deterministically.

The records come from a seeded :class:`impactframe.sandbox.SandboxServer` and go through the
real HTTP path (``load_records`` / ``load_customer_records``), so the files hold exactly what
the loaders return: same columns, same dtypes, validated by ``impactframe.schemas``.

    python data-samples/make_samples.py            # rewrites the files beside this script
    python data-samples/make_samples.py --out DIR  # or somewhere else
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import impactframe as ifr
from impactframe.cli._output import write_frame
from impactframe.sandbox import SandboxServer

#: Fixed inputs: the same seed and sizes always give the same rows.
SEED = 1
N_RECORDS = 200
N_CUSTOMER_RECORDS = 200
FILES = {
    "records": "records_sample.parquet",
    "customer_records": "customer_records_sample.parquet",
}
HERE = Path(__file__).resolve().parent


def make_samples(out: Path = HERE) -> dict[str, Path]:
    """Write both samples into `out` (atomically) and return their paths by endpoint.

    Examples
    --------
    >>> import tempfile
    >>> paths = make_samples(Path(tempfile.mkdtemp()))  # doctest: +SKIP
    >>> sorted(p.name for p in paths.values())  # doctest: +SKIP
    ['customer_records_sample.parquet', 'records_sample.parquet']
    """
    with SandboxServer(
        seed=SEED, n_records=N_RECORDS, n_customer_records=N_CUSTOMER_RECORDS
    ) as server:
        connection: dict[str, Any] = {
            "api_key": server.api_key,
            "base_url": server.url,
            "progress": False,
        }
        frames = {
            "records": ifr.load_records(**connection),
            "customer_records": ifr.load_customer_records(**connection),
        }
    out.mkdir(parents=True, exist_ok=True)  # write_frame creates no folder itself
    return {name: write_frame(frames[name], out / FILES[name]) for name in FILES}


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python data-samples/make_samples.py [--out DIR]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--out", type=Path, default=HERE, help="folder (default: data-samples/)")
    args = parser.parse_args(argv)
    for path in make_samples(args.out).values():
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
