"""A sandbox in its own process: ``python -m benchmarks._serve N [LATENCY]``.

Prints ``URL KEY`` on one line once it listens, then serves ``N`` generated customer records
(and as many user records) until its stdin closes.
"""

from __future__ import annotations

import sys

from impactframe.sandbox import SandboxServer


def main(argv: list[str]) -> None:
    n = int(argv[0])
    latency = float(argv[1]) if len(argv) > 1 else 0.0
    with SandboxServer(n_records=n, n_customer_records=n, seed=7, latency=latency) as server:
        print(server.url, server.api_key, flush=True)
        sys.stdin.read()  # until the driver closes our stdin (or exits)


if __name__ == "__main__":
    main(sys.argv[1:])
