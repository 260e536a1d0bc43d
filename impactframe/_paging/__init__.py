"""Walking an endpoint's pages: the page envelope, the cursor walk, date windows, concurrency.

Import from the modules: `_pages` (page envelopes and the cursor walk), `_cap` (the capped walk
of one query), `_windows` (date windows), `_handoff` and `_concurrent` (pages fetched by
background threads, over date windows when concurrent).
"""
