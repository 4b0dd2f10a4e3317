"""Programs that run inside the candidate (or its server or GPU container), on whatever Python the image has:
written for Python 2.7 and 3.5+ alike (no f-strings, no annotations). They are real files so that ruff sees
them and tests run them under the host's Python; the host loads each as text and runs it with `python -c`
(or copies it in), never imports it.
"""

from __future__ import annotations

import functools
from importlib import resources


@functools.lru_cache(maxsize=None)
def source(name: str) -> str:
    """The text of one program in this package, e.g. source("probe_python.py")."""
    return resources.files(__name__).joinpath(name).read_text(encoding="utf-8")
