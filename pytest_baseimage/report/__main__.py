"""``python -m pytest_baseimage.report merge ...``: the same as the ``baseimage-report`` command."""

from pytest_baseimage.report.cli import main

raise SystemExit(main())
