"""Chord results too large to inline, and the members' trace links (docs/PROTOCOL.md §13).

A worker stores a batch member's result whose JSON is over :data:`MAX_MARKER_RESULT` bytes as
object ``<batch id>/<member key>`` of the object store ``<PREFIX>_RESULTS`` and names it in the
member's marker (``result_ref``) instead of keeping the value; the callback's summary carries
that ``result_ref``. :func:`chord_result` reads a summary entry's result either way. A marker
also keeps the ``traceparent`` of the attempt that finished the member; a callback carries up
to :data:`MAX_LINKS` of them in the ``Jetq-Trace-Links`` header, and the worker that runs it
links its span to each.
"""

from __future__ import annotations

import io
import json
from typing import TYPE_CHECKING, Any, Dict, Optional, Sequence, Tuple

from .errors import ArtifactNotFound, JetqError, StatusReadError
from .protocol import Subjects
from .status import status_key

if TYPE_CHECKING:
    from .producer import AsyncProducer

__all__ = [
    "LINKS_HEADER",
    "MAX_LINKS",
    "MAX_MARKER_RESULT",
    "ChordResultError",
    "chord_result",
    "links_header",
    "result_object_name",
    "results_bucket",
]

#: A member's result larger than this (bytes of compact JSON) is stored by reference.
MAX_MARKER_RESULT = 16 * 1024
#: Most members a callback's span links to (the first ones by member id).
MAX_LINKS = 128
#: Header of a callback: its members' ``traceparent`` s, comma-separated.
LINKS_HEADER = "Jetq-Trace-Links"


class ChordResultError(JetqError):
    """A stored chord result could not be read (no results store, no such object, a digest or
    JSON that does not match)."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"chord result {name}: {reason}")
        self.name = name
        self.reason = reason


def results_bucket(subjects: Subjects) -> str:
    """``<PREFIX>_RESULTS``: ``JETQ_RESULTS`` for the default prefix."""
    return subjects.status_bucket[: -len("_STATUS")] + "_RESULTS"


def result_object_name(batch: str, member: str) -> str:
    """The object holding a member's result: ``<batch id>/<member id as a status key>``."""
    return f"{batch}/{status_key(member)}"


def links_header(markers: Sequence[Tuple[str, Dict[str, Any]]]) -> Optional[str]:
    """The ``Jetq-Trace-Links`` value for markers ordered by member id: the first
    :data:`MAX_LINKS` ``traceparent`` s; ``None`` when no marker has one."""
    links = []
    for _, marker in markers:
        parent = marker.get("traceparent")
        if isinstance(parent, str) and parent and not any(c in parent for c in ",\r\n"):
            links.append(parent)
            if len(links) == MAX_LINKS:
                break
    return ",".join(links) if links else None


async def chord_result(producer: "AsyncProducer", entry: Dict[str, Any]) -> Any:
    """The result of one entry of a chord callback's ``batch["results"]``: its inline
    ``result``, or the object its ``result_ref`` names, read from ``<PREFIX>_RESULTS`` (digest
    checked); ``None`` when it has neither.

    :raises ChordResultError: the object could not be read
    """
    ref = entry.get("result_ref")
    if not ref:
        return entry.get("result")
    batch, _, key = str(ref).partition("/")
    buffer = io.BytesIO()
    try:
        await producer._read_artifact(batch, key, buffer, bucket=results_bucket(producer._subjects))
    except ArtifactNotFound:
        raise ChordResultError(str(ref), "no such object (expired, or no results store)") from None
    except StatusReadError as err:
        raise ChordResultError(str(ref), str(err)) from err
    try:
        return json.loads(buffer.getvalue())
    except ValueError as err:
        raise ChordResultError(str(ref), f"not JSON: {err}") from None
