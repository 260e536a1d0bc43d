"""``python -m impactframe``: the command line (see :mod:`impactframe.cli`)."""

from impactframe.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
