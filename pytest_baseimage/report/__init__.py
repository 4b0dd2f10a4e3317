"""Reports rendered from the result model: JSON (with a schema), self-contained HTML, JUnit XML, merge.

Every output is built from the same ``Run`` of ``ImageReport`` objects, so they cannot disagree.
"""

from __future__ import annotations

from pytest_baseimage.report.html import render_html, write_html
from pytest_baseimage.report.junit import to_junit_xml
from pytest_baseimage.report.model import SCHEMA_VERSION, ReportError, Run, load_json, merge, write_json
from pytest_baseimage.report.safety import redact, strip_ansi

__all__ = [
    "SCHEMA_VERSION",
    "ReportError",
    "Run",
    "load_json",
    "merge",
    "redact",
    "render_html",
    "strip_ansi",
    "to_junit_xml",
    "write_html",
    "write_json",
]
