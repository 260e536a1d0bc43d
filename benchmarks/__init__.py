"""impactframe's benchmarks: ``python -m benchmarks`` (``make bench``).

Every measurement runs in a fresh Python process against a sandbox that runs in its own
process (so the server's memory is not counted), several times, and the medians are printed
as a Markdown table; ``benchmarks/RESULTS.md`` records a run. See ``python -m benchmarks -h``.

- ``__main__``: the driver (starts the sandboxes, runs the measurements, prints the tables).
- ``_serve``: a sandbox server process.
- ``_measure``: the measurements, one per child process; each prints one JSON line.
- ``export_memory``: peak memory of ``export_parquet`` (run on its own).
"""
