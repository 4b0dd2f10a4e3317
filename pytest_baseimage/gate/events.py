"""Docker distribution notifications: which events become jobs, and what is refused.

Envelope (distribution/distribution v2.8 `notifications`, see WAVE2-FACTS.md): a POST with Content-Type
`application/vnd.docker.distribution.events.v1+json` (v2 on the 3.x line) and body `{"events": [...]}`.
Only a push of a manifest *with a tag* is an image someone published; pulls, mounts, blob pushes, deletes
and untagged child manifests of an index are ignored.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

EVENT_MEDIA_TYPES = (
    "application/vnd.docker.distribution.events.v1+json",
    "application/vnd.docker.distribution.events.v2+json",
)
MANIFEST_MEDIA_TYPES = (
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.index.v1+json",
)
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
# The distribution spec's repository name grammar (path components of lowercase alphanumerics and separators).
REPOSITORY = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$")
TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
MAX_EVENTS = 1000


class BadEvents(ValueError):
    """The body is not a notification envelope: the answer is 400, and nothing is queued."""


@dataclass(frozen=True)
class Push:
    """A tagged manifest pushed to a repository: the unit a job is made from."""

    repository: str
    digest: str
    tag: str
    media_type: str


def media_type_ok(content_type: str) -> bool:
    """The envelope's media type, parameters (`; charset=...`) aside."""
    return content_type.split(";", 1)[0].strip().lower() in EVENT_MEDIA_TYPES


def parse(body: bytes) -> tuple[list[Push], int]:
    """The pushes in a notification body, and how many events were ignored; BadEvents if it is no envelope.

    The whole body is checked before anything is returned, so a bad event anywhere queues nothing.
    """
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadEvents(f"not JSON: {exc}") from None
    events = data.get("events") if isinstance(data, dict) else None
    if not isinstance(events, list):
        raise BadEvents('the body is not {"events": [...]}')
    if len(events) > MAX_EVENTS:
        raise BadEvents(f"more than {MAX_EVENTS} events in one body")
    pushes, ignored = [], 0
    for index, event in enumerate(events):
        push = _push(event, index)
        if push is None:
            ignored += 1
        else:
            pushes.append(push)
    return list(dict.fromkeys(pushes)), ignored


def _push(event: Any, index: int) -> Push | None:
    if not isinstance(event, dict) or not isinstance(event.get("target"), dict):
        raise BadEvents(f"event {index} has no target object")
    target = event["target"]
    if event.get("action") != "push" or target.get("mediaType") not in MANIFEST_MEDIA_TYPES or not target.get("tag"):
        return None
    repository, digest, tag = target.get("repository"), target.get("digest"), target.get("tag")
    if not isinstance(repository, str) or not REPOSITORY.match(repository) or len(repository) > 255:
        raise BadEvents(f"event {index}: not a repository name")
    if not isinstance(digest, str) or not DIGEST.match(digest):
        raise BadEvents(f"event {index}: not a sha256 digest")
    if not isinstance(tag, str) or not TAG.match(tag):
        raise BadEvents(f"event {index}: not a tag")
    return Push(repository, digest, tag, target["mediaType"])
