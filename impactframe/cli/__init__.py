"""The command line, ``impactframe`` (SPEC §9); the entry point is ``impactframe.cli:main``.

`_main` builds the parser and maps errors to exit codes; `_args` holds the shared argument
types, `_query` the commands that read the API (``fetch``, ``export``, ``summary``), `_local`
the others (``demo``, ``sandbox``, ``cache``), `_demo` the demo job and `_output` the writers.
"""

from ._main import build_parser, main

__all__ = ["build_parser", "main"]
