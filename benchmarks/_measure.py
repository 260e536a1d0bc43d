"""One measurement per process: ``python -m benchmarks._measure KIND URL KEY [ARG]``.

Prints one JSON line. Imports and one-off warm-ups (pandera builds its schema once per
process) happen before the clock starts and before the memory baseline is taken, for every
contender alike. Peak memory is the process's peak resident set above that baseline (Linux:
the peak is reset with ``/proc/self/clear_refs`` first; elsewhere ``ru_maxrss``).

Kinds:

- ``impactframe``: ``load_customer_records`` over HTTP (page bodies to a validated frame).
- ``naive``: a ``requests`` page loop + ``json.loads`` + ``pandas.json_normalize``.
- ``sdk``: the official SDK's ``get_customer_records`` walk (``makeimpact``) + a DataFrame.
- ``convert``: page bodies already in memory to the validated frame (``FrameBuilder``),
  with the validation's share and the frame's size.
- ``cache``: ``load_customer_records(cache=ARG)``: fills the folder, or reads it back.
- ``reference``: the same bodies through ``json.loads`` + the reference ``FrameBuilder``.
- ``concurrency``: ``load_customer_records(concurrency=ARG)`` (against a slow sandbox).
- ``user``: as a notebook user meets it: ``import impactframe`` outside the clock, then the
  first ``load_customer_records`` of the process inside it (no warm-up: pandera's schema and
  any lazy import are paid here), default arguments; then a second, identical call.
- ``export``: the first ``export_parquet`` of a fresh process (default arguments) into ARG.
- ``output``: as ``impactframe`` with ``output=ARG`` (``pandas``, ``arrow``, ``polars``) and
  optionally ``metadata=`` a second ARG.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
import os
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ENDPOINT = "customer_records"
PATH = "/v1/customer_records"
PAGE_SIZE = 1000


# -- memory --------------------------------------------------------------------------------------


def _status(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def start_memory() -> int:
    """Reset the peak (where the OS allows it) and return the current resident set."""
    gc.collect()
    with contextlib.suppress(OSError):  # Linux only
        Path("/proc/self/clear_refs").write_text("5")
    current = _status("VmRSS")
    return current if current is not None else _max_rss()


def _max_rss() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def peak_memory() -> int:
    peak = _status("VmHWM")
    return peak if peak is not None else _max_rss()


def frame_bytes(df: Any) -> tuple[int, int]:
    """``(memory_usage(deep=True), bytes held)``: the second counts a buffer that columns share
    (the pyarrow backend's impact columns share ``amount``'s values) once."""
    import pandas as pd

    deep = int(df.memory_usage(deep=True, index=True).sum())
    seen: set[int] = set()
    held = 0
    for name in df.columns:
        values = df[name].array
        if isinstance(values, pd.arrays.ArrowExtensionArray):
            for chunk in values._pa_array.chunks:
                for buffer in chunk.buffers():
                    if buffer is not None and buffer.address not in seen:
                        seen.add(buffer.address)
                        held += buffer.size
        elif isinstance(values, pd.Categorical):
            held += values.codes.nbytes
        else:
            held += int(df[name].memory_usage(deep=True, index=False))
    return deep, held


# -- helpers ---------------------------------------------------------------------------------


def _bodies(url: str, key: str) -> list[bytes]:
    """Every page body of the customer endpoint, as the API sent it."""
    import requests

    from impactframe._paging._pages import parse_page

    bodies, cursor = [], None
    with requests.Session() as session:
        while True:
            params: dict[str, Any] = {"limit": PAGE_SIZE, **({"cursor": cursor} if cursor else {})}
            response = session.get(url + PATH, params=params, headers={"x-api-key": key})
            response.raise_for_status()
            bodies.append(response.content)
            cursor = parse_page(response.content, ENDPOINT).cursor
            if not cursor:
                return bodies


def _timed(func: Callable[[], Any]) -> tuple[Any, dict[str, Any]]:
    """``(result, {"seconds", "cpu", "peak"})``: wall time, CPU time of this process (every
    thread; the sandbox runs elsewhere) and peak memory above the start."""
    start = start_memory()
    cpu = time.process_time()
    began = time.perf_counter()
    result = func()
    seconds = time.perf_counter() - began
    cpu = time.process_time() - cpu
    return result, {"seconds": seconds, "cpu": cpu, "peak": peak_memory() - start}


# -- the contenders --------------------------------------------------------------------------------


def impactframe(url: str, key: str, backend: str = "numpy_nullable") -> dict[str, Any]:
    import impactframe as ifr
    from impactframe._frame._builder import empty_frame

    empty_frame(ENDPOINT, dtype_backend=backend)  # warm-up: pandera's schema, lazy imports

    def run() -> Any:
        return ifr.load_customer_records(
            api_key=key, base_url=url, page_size=PAGE_SIZE, progress=False, dtype_backend=backend
        )

    df, timing = _timed(run)
    return {"rows": len(df), **timing}


def output(url: str, key: str, kind: str = "pandas", metadata: str = "columns") -> dict[str, Any]:
    from impactframe._frame._reference import empty_frame

    import impactframe as ifr

    empty_frame(ENDPOINT)  # warm-up: pandera's schema, lazy imports
    if kind == "polars":
        import polars  # noqa: F401  (imported outside the clock, as pandas is)

    def run() -> Any:
        return ifr.load_customer_records(
            api_key=key,
            base_url=url,
            page_size=PAGE_SIZE,
            progress=False,
            output=kind,
            metadata=metadata,
        )

    result, timing = _timed(run)
    return {"rows": len(result), **timing}


def naive(url: str, key: str) -> dict[str, Any]:
    import pandas as pd
    import requests

    def run() -> Any:
        records: list[Any] = []
        cursor = None
        with requests.Session() as session:
            while True:
                params: dict[str, Any] = {
                    "limit": PAGE_SIZE,
                    **({"cursor": cursor} if cursor else {}),
                }
                response = session.get(url + PATH, params=params, headers={"x-api-key": key})
                response.raise_for_status()
                body = json.loads(response.content)
                records.extend(body["customer_records"])
                cursor = body.get("cursor")
                if not cursor:
                    return pd.json_normalize(records)

    df, timing = _timed(run)
    return {"rows": len(df), **timing, "frame": frame_bytes(df)[0]}


def sdk(url: str, key: str) -> dict[str, Any]:
    try:
        from makeimpact import Environment, OneClickImpact
    except ImportError:
        return {"missing": "makeimpact is not installed (pip install makeimpact)"}
    import pandas as pd

    client = OneClickImpact(key, Environment.SANDBOX)
    client.base_url = url  # the SDK has no base URL option: point it at the local sandbox

    def run() -> Any:
        records: list[Any] = []
        cursor = None
        while True:
            page = client.get_customer_records(cursor=cursor, limit=PAGE_SIZE)
            records.extend(page.customer_records)
            cursor = page.cursor
            if not cursor:
                return pd.json_normalize([dataclasses.asdict(r) for r in records])

    df, timing = _timed(run)
    return {"rows": len(df), **timing, "frame": frame_bytes(df)[0]}


def convert(url: str, key: str, backend: str = "numpy_nullable") -> dict[str, Any]:
    import impactframe.schemas as schemas
    from impactframe._frame._builder import FrameBuilder, empty_frame

    empty_frame(ENDPOINT, dtype_backend=backend)
    bodies = _bodies(url, key)
    validate, spent = schemas.validate, [0.0]

    def timed_validate(*args: Any, **kwargs: Any) -> Any:
        began = time.perf_counter()
        try:
            return validate(*args, **kwargs)
        finally:
            spent[0] += time.perf_counter() - began

    schemas.validate = timed_validate

    def run() -> Any:
        builder = FrameBuilder(ENDPOINT, dtype_backend=backend)
        for body in bodies:
            builder.add_raw(body)
        return builder.finish()

    df, timing = _timed(run)
    schemas.validate = validate
    deep, held = frame_bytes(df)
    return {"rows": len(df), **timing, "validate": spent[0], "frame": deep, "held": held}


def cache(url: str, key: str, folder: str) -> dict[str, Any]:
    """Read the frame back from a cache folder: filled by the first call, read by the next.

    The driver runs this twice in fresh processes: a read is timed in a process that did not
    write, as when yesterday's load is served today."""
    import impactframe as ifr
    from impactframe._frame._builder import empty_frame

    empty_frame(ENDPOINT)
    kwargs: dict[str, Any] = {"api_key": key, "base_url": url, "progress": False, "cache": folder}
    filled = any(Path(folder).rglob("*.parquet"))
    df, timing = _timed(lambda: ifr.load_customer_records(page_size=PAGE_SIZE, **kwargs))
    on_disk = sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())
    return {"rows": len(df), **timing, "disk": on_disk, "hit": filled}


def reference(url: str, key: str) -> dict[str, Any]:
    from impactframe._frame._builder import FrameBuilder, empty_frame

    empty_frame(ENDPOINT)
    bodies = _bodies(url, key)

    def run() -> Any:
        builder = FrameBuilder(ENDPOINT)
        for body in bodies:
            builder.add(json.loads(body)["customer_records"])
        return builder.finish()

    df, timing = _timed(run)
    return {"rows": len(df), **timing}


def concurrency(url: str, key: str, workers: str) -> dict[str, Any]:
    import impactframe as ifr
    from impactframe._frame._builder import empty_frame

    empty_frame(ENDPOINT)

    def run() -> Any:
        return ifr.load_customer_records(
            api_key=key, base_url=url, page_size=PAGE_SIZE, progress=False,
            concurrency="auto" if workers == "auto" else int(workers),
        )  # fmt: skip

    df, timing = _timed(run)
    return {"rows": len(df), **timing}


def user(url: str, key: str, second: str = "second") -> dict[str, Any]:
    import impactframe as ifr  # imports are outside the clock; everything else is inside

    def run() -> Any:
        return ifr.load_customer_records(api_key=key, base_url=url, progress=False)

    df, timing = _timed(run)
    if second != "second":  # "once": the server's log then counts this call's requests only
        return {"rows": len(df), **timing}
    began = time.perf_counter()
    second = run()
    timing["second"] = time.perf_counter() - began
    if len(second) != len(df):
        msg = f"the second call returned {len(second)} rows, the first {len(df)}"
        raise RuntimeError(msg)
    return {"rows": len(df), **timing}


def export(url: str, key: str, folder: str) -> dict[str, Any]:
    import impactframe as ifr

    def run() -> Any:
        return ifr.export_parquet(
            Path(folder) / "dataset", "customer_records", api_key=key, base_url=url,
            progress=False,
        )  # fmt: skip

    result, timing = _timed(run)
    return {"rows": result.records, **timing}


def checks(url: str, key: str, variant: str) -> dict[str, Any]:
    """A default load with the trust checks of SPEC §4 on (``"on"``) or taken out, to price
    them: ``"off"`` skips the page checks against the query and the progress check; ``"bare"``
    also reads only the cursor of each body (no per-record facts), as the first round did."""
    import msgspec

    import impactframe as ifr
    from impactframe._paging import _cap, _pages, _walk

    if variant in ("off", "bare"):
        _cap.check_page = lambda facts, query, previous: previous  # type: ignore[assignment]
        _walk._Progress.check = lambda self, page, number: None  # type: ignore[method-assign]
    if variant == "bare":
        cursor_only = msgspec.json.Decoder(
            msgspec.defstruct("Envelope", [("cursor", object, None)])
        )

        def parse(body: bytes, records_key: str, *, customers: bool = False) -> Any:
            cursor = cursor_only.decode(body).cursor
            return _pages.Page(body, PAGE_SIZE, cursor, records_key=records_key, facts=[])

        _cap.parse_page = parse  # type: ignore[assignment]

    def run() -> Any:
        return ifr.load_customer_records(api_key=key, base_url=url, progress=False)

    df, timing = _timed(run)
    return {"rows": len(df), **timing}


KINDS: dict[str, Callable[..., dict[str, Any]]] = {
    "checks": checks,
    "user": user,
    "export": export,
    "impactframe": impactframe,
    "output": output,
    "naive": naive,
    "sdk": sdk,
    "convert": convert,
    "reference": reference,
    "cache": cache,
    "concurrency": concurrency,
}


if __name__ == "__main__":
    kind, *args = sys.argv[1:]
    print(json.dumps(KINDS[kind](*args)), flush=True)
    # Skip the interpreter's teardown: pyarrow's thread pools can abort the process at exit
    # ("terminate called without an active exception") after the result is printed.
    os._exit(0)
