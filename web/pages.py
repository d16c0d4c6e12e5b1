"""The dashboard's pages: an organization's runs, a run, and the artifacts its steps listed."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from flask import Blueprint, abort, render_template, send_file
from werkzeug.wrappers import Response

from schemas.enums import RunStatus
from schemas.envelopes import FileRef
from schemas.paths import is_slug
from store.ports import IntegrityError, ObjectMissing, download_verified
from web.context import org_run, web_context

log = logging.getLogger(__name__)
pages = Blueprint("pages", __name__)

REJECTED_OUTPUTS_SHOWN = 20


@pages.get("/orgs/<org>/runs")
def runs(org: str) -> str:
    if not is_slug(org):
        abort(404)
    ctx = web_context()
    return render_template("runs.html", org=org, runs=ctx.reads.runs_for_org(org, ctx.settings.web_runs_per_page))


@pages.get("/orgs/<org>/runs/<run_id>")
def run(org: str, run_id: str) -> str:
    doc = org_run(org, run_id)
    ctx = web_context()
    return render_template(
        "run.html",
        org=org,
        run_id=run_id,
        run=doc,
        terminal=RunStatus(doc.status).is_terminal,
        steps=ctx.reads.steps(run_id),
        findings=ctx.reads.findings(run_id, ctx.settings.web_findings_per_page),
        rejected=ctx.reads.rejected_receipts(run_id, limit=REJECTED_OUTPUTS_SHOWN),
    )


@pages.get("/orgs/<org>/runs/<run_id>/steps/<int:number>/artifacts/<name>")
def artifact(org: str, run_id: str, number: int, name: str) -> Response:
    """Only an artifact the step's output listed, exactly the version it recorded: fetched whole and checked for
    size and sha256 before the first byte is sent, so a changed object is never served as this run's."""
    org_run(org, run_id)
    ctx = web_context()
    step = ctx.reads.step(run_id, number)
    listed = next((a for a in step.artifacts if a.name == name), None) if step else None
    if listed is None or listed.generation is None:
        abort(404)
    pinned = FileRef(
        name=listed.name,
        role="artifact",
        uri=listed.uri,
        size_bytes=listed.size_bytes,
        sha256=listed.sha256,
        generation=listed.generation,
    )
    with tempfile.TemporaryDirectory(prefix="validibot-artifact-") as scratch:
        try:
            path = download_verified(ctx.objects, pinned, Path(scratch) / "artifact")
        except ObjectMissing:
            abort(404)
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
