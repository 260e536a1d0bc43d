"""The child process of the kill and contention runs (``benchmarks/soak.py`` and
``tests/test_trust_faults.py``): ``python -m benchmarks._kill_child SPEC_JSON``.

It loads into a cache or exports over a dataset, counting the file operations under
``spec["watch"]`` with an audit hook (``sys.addaudithook``), so nothing in impactframe is
patched. With ``stop_at`` it prints ``PAUSED <event> <path>`` and sleeps just before that
operation, for the parent to kill it; with ``trace`` it prints every operation it counted.
With ``wait_go`` it prints ``READY`` once imported and starts when a line arrives on its
stdin, so that the parent can start several at the same moment. A load prints
``SPAN [start, end]`` (wall-clock seconds) and pickles its frame to ``spec["pickle"]`` if
given; every run ends with ``DONE <operations>`` (the list with ``trace``, else the count).

The spec's keys: ``mode`` ("load" or "export"), ``key``, ``url``, ``page_size``, ``watch``;
for a load ``cache`` and ``refresh``; for an export ``out``, ``batch_records`` and, optionally,
``refresh``.

Run it with the repository on ``PYTHONPATH``; it imports nothing from here but this module,
and impactframe only after the hook is installed.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

#: The audit events that touch files; the rest are not counted.
EVENTS = {"open", "os.rename", "os.remove", "os.rmdir", "os.mkdir", "os.chmod", "shutil.rmtree"}


def _watch(spec: dict[str, Any]) -> list[list[str]]:
    """Install the audit hook; returns the list it fills with ``[event, relative path]``."""
    watch, stop_at = spec["watch"], spec.get("stop_at")
    ops: list[list[str]] = []

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event not in EVENTS or not args:
            return
        path = args[0]
        if isinstance(path, os.PathLike):
            path = os.fspath(path)
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        if not isinstance(path, str) or not path.startswith(watch):
            return
        ops.append([event, path[len(watch) :]])
        if len(ops) == stop_at:
            print("PAUSED", event, path[len(watch) :], flush=True)
            time.sleep(600)

    sys.addaudithook(hook)  # before impactframe is imported: its imports are not counted
    return ops


def _run(spec: dict[str, Any]) -> None:
    import impactframe as ifr

    client = ifr.Client(spec["key"], base_url=spec["url"])
    client._sleep = lambda seconds: None
    if spec.get("wait_go"):  # lined up with another child: start when the parent says go
        print("READY", flush=True)
        sys.stdin.readline()
    if spec["mode"] == "load":
        began = time.time()
        frame = ifr.load_records(
            client=client,
            cache=spec["cache"],
            refresh=spec["refresh"],
            page_size=spec["page_size"],
            progress=False,
        )
        print("SPAN", json.dumps([began, time.time()]), flush=True)
        if "pickle" in spec:
            frame.to_pickle(spec["pickle"])
    else:
        ifr.export_parquet(
            spec["out"],
            client=client,
            overwrite=True,
            refresh=spec.get("refresh", False),
            page_size=spec["page_size"],
            batch_records=spec["batch_records"],
            partition_by=("year",),
            progress=False,
        )


def main(argv: list[str]) -> None:
    """Run the child described by the JSON spec ``argv[0]``."""
    spec = json.loads(argv[0])
    ops = _watch(spec)
    _run(spec)
    print("DONE", json.dumps(ops if spec.get("trace", False) else len(ops)), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
