"""Serving a file a step produced, to the run page and to the API alike."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from pathlib import Path

from flask import abort, send_file
from werkzeug.wrappers import Response

from schemas.envelopes import Artifact, FileRef
from store.ports import IntegrityError, ObjectMissing, download_verified
from web.context import web_context

log = logging.getLogger(__name__)


def pinned(artifact: Artifact) -> FileRef:
    """The artifact as its step recorded it: exactly that generation, size and sha256, which reads check."""
    return FileRef(
        name=artifact.name,
        role="artifact",
        uri=artifact.uri,
        size_bytes=artifact.size_bytes,
        sha256=artifact.sha256,
        generation=artifact.generation,
    )


def serve_artifact(run_id: str, number: int, name: str, missing: Callable[[], Exception]) -> Response:
    """Only an artifact the step's output listed, exactly the version it recorded: fetched whole and checked for
    size and sha256 before the first byte is sent, so a changed object is never served as this run's. The caller
    has checked that the run is the caller's to see; `missing` is what to raise when there is no such file."""
    ctx = web_context()
    step = ctx.reads.step(run_id, number)
    listed = next((a for a in step.artifacts if a.name == name), None) if step else None
    if listed is None or listed.generation is None:
        raise missing()
    with tempfile.TemporaryDirectory(prefix="validibot-artifact-") as scratch:
        try:
            path = download_verified(ctx.objects, pinned(listed), Path(scratch) / "artifact")
        except ObjectMissing:
            raise missing() from None
        except IntegrityError:
            log.error("artifact %s of run %s does not match what its step recorded: not served", listed.uri, run_id)
            abort(409, "this artifact changed after its step recorded it and is not served")
        # Unlinked when the directory goes; the open file stays readable until the response is sent.
        served = path.open("rb")
    response = send_file(
        served,
        mimetype=listed.mime_type or "application/octet-stream",
        as_attachment=True,
        download_name=listed.name,
    )
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response
