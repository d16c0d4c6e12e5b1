"""The dashboard's pages: an organization's runs, a run, and the artifacts its steps listed."""

from __future__ import annotations

from flask import Blueprint, abort, render_template, stream_with_context
from werkzeug.wrappers import Response

from schemas.enums import RunStatus
from schemas.paths import is_slug
from store.ports import ObjectMissing
from web.context import org_run, web_context

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
    """Only an artifact the step's output listed: the URL never names a bucket path of its own."""
    org_run(org, run_id)
    ctx = web_context()
    step = ctx.reads.step(run_id, number)
    listed = next((a for a in step.artifacts if a.name == name), None) if step else None
    if listed is None:
        abort(404)
    try:
        chunks = ctx.objects.stream(listed.uri)
    except ObjectMissing:
        abort(404)
    return Response(
        stream_with_context(chunks),
        mimetype=listed.mime_type or "application/octet-stream",
        headers={
            "Content-Disposition": f'attachment; filename="{listed.name}"',
            "Content-Length": str(listed.size_bytes),
            "X-Content-Type-Options": "nosniff",
        },
    )
