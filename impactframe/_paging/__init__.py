"""Walking an endpoint's pages: one page type, the checked cursor walk, date windows, concurrency.

Import from the modules: `_pages` (`Page`, read from a body), `_verify` (a page checked against
its query), `_walk` (the cursor walk that always ends), `_cap` (one query's chain, capped),
`_windows` (date windows), `_gate` (requests in flight, adapted to 429s), `_prefetch`,
`_handoff` and `_concurrent` (`iter_pages`: pages fetched by background threads, over date
windows when concurrent). Imports flow down: `_paging` uses the client, never the other way.
"""
