"""Size bounds for the JSON verdict: an image may list 120,000 packages or a server may log gigabytes, and a
gate must still be able to read its verdict file. Each cut is recorded in `truncated` ("details.present":
119000 items), so a reader knows what it does not see.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from pytest_baseimage.results import ImageReport, StageResult

MAX_ITEMS = 1000  # entries of one list or map in a stage's details
MAX_FACT_ITEMS = 5000  # entries of one facts map (apt, pip): baselines compare these
MAX_TEXT = 20_000  # characters of one string in details; its end is kept (where a log's error is)
MAX_DEPTH = 16  # nesting in details: deeper values are replaced
MAX_STAGE_CHARS = 400_000  # one stage's details as JSON, after the cuts above; larger values go, largest first


def bounded_image(image: ImageReport) -> ImageReport:
    """A copy of the image report within the bounds, with what was cut added to each `truncated`."""
    image = copy.copy(image)
    cut: dict[str, int] = dict(image.truncated)
    image.facts = {
        key: _bound(value, f"facts.{key}", cut, MAX_FACT_ITEMS, 0) if isinstance(value, (dict, list)) else value
        for key, value in image.facts.items()
    }
    image.truncated = cut
    image.results = [bounded_result(result) for result in image.results]
    return image


def bounded_result(result: StageResult) -> StageResult:
    result = copy.copy(result)
    cut: dict[str, int] = dict(result.truncated)
    details = {key: _bound(value, f"details.{key}", cut, MAX_ITEMS, 0) for key, value in result.details.items()}
    sizes = {key: len(json.dumps(value, default=str)) for key, value in details.items()}
    total = sum(sizes.values())
    for key in sorted(sizes, key=sizes.__getitem__, reverse=True):
        if total <= MAX_STAGE_CHARS:
            break
        details[key] = f"[{sizes[key]} characters cut: over the report's size bound]"
        _add(cut, f"details.{key}", sizes[key])
        total -= sizes[key]
    result.details = details
    result.truncated = cut
    return result


def _bound(value: Any, path: str, cut: dict[str, int], max_items: int, depth: int) -> Any:
    if isinstance(value, str):
        if len(value) <= MAX_TEXT:
            return value
        _add(cut, path, len(value) - MAX_TEXT)
        return value[-MAX_TEXT:]
    if not isinstance(value, (dict, list, tuple)):
        return value
    if depth >= MAX_DEPTH:
        _add(cut, path, 1)
        return "[nested too deep]"
    if len(value) > max_items:
        _add(cut, path, len(value) - max_items)
    if isinstance(value, dict):
        kept = list(value.items())[:max_items]
        return {k: _bound(v, path, cut, max_items, depth + 1) for k, v in kept}
    return [_bound(v, path, cut, max_items, depth + 1) for v in list(value)[:max_items]]


def _add(cut: dict[str, int], path: str, count: int) -> None:
    cut[path] = cut.get(path, 0) + count
