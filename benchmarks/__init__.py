"""impactframe's benchmarks: ``python -m benchmarks`` (``make bench``).

Every measurement runs in a fresh Python process against a sandbox that runs in its own
process (so the server's memory is not counted), several times, and the medians are printed
as a Markdown table; ``benchmarks/RESULTS.md`` records a run. See ``python -m benchmarks -h``.

- ``__main__``: the driver (starts the sandboxes, runs the measurements, prints the tables).
- ``_serve``: a sandbox server process.
- ``_measure``: the measurements, one per child process; each prints one JSON line.
- ``export_memory``: peak memory of ``export_parquet`` (``python -m benchmarks.export_memory``).
- ``scale``: cache hit vs network fetch, incremental refresh vs full reload
  (``python -m benchmarks.scale``).
- ``soak``: soak, kill and contention runs under faults: nothing lost, doubled or half-written
  (``make soak``).
- ``hostile``: hostile-server runs (bombs, drips, pages that ignore the query, endless walks),
  each in a fresh child with a time and memory bound (``python -m benchmarks.soak --hostile``).
- ``_hostile``: the hostile loopback servers, shared with ``tests/test_trust_pages.py`` and
  ``tests/test_hostile_transport.py``; ``_datasets``: exported datasets compared with frames.
- ``_kill_child``: the child process that ``soak`` and ``tests/test_trust_faults.py`` kill
  mid-load or mid-export.
"""
