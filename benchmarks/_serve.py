"""A sandbox in its own process: ``python -m benchmarks._serve N [LATENCY [RATE_LIMIT]]``.

Prints ``URL KEY`` on one line once it listens, then serves ``N`` generated customer records
(and as many user records) until its stdin closes; then prints one JSON line of what it
answered (``{"requests": ..., "statuses": {"200": ..., "429": ...}}``), so a driver can tell
how many requests a rate limit refused without parsing the client's logs.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from typing import Any

from impactframe.sandbox import SandboxServer


def main(argv: list[str]) -> None:
    n = int(argv[0])
    latency = float(argv[1]) if len(argv) > 1 else 0.0
    options: dict[str, Any] = {}
    if len(argv) > 2 and float(argv[2]) > 0:
        options["rate_limit"] = float(argv[2])
    with SandboxServer(
        n_records=n, n_customer_records=n, seed=7, latency=latency, **options
    ) as server:
        print(server.url, server.api_key, flush=True)
        sys.stdin.read()  # until the driver closes our stdin (or exits)
        statuses = Counter(str(logged.status) for logged in server.requests)
    print(json.dumps({"requests": sum(statuses.values()), "statuses": dict(statuses)}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
