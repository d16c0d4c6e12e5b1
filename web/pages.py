"""The dashboard's pages: an organization's runs, a run, and the artifacts its steps listed; each for the org's
signed-in members only."""

from __future__ import annotations

from flask import Blueprint, abort, redirect, render_template, request, url_for
from werkzeug.exceptions import NotFound
from werkzeug.wrappers import Response

from schemas.enums import RunStatus
from schemas.paths import is_run_id
from web.artifacts import serve_artifact
from web.auth import page_access, signed_in
from web.context import org_run, web_context

pages = Blueprint("pages", __name__)

REJECTED_OUTPUTS_SHOWN = 20


@pages.get("/")
def index() -> Response:
    """A signed-in person lands on their first org's runs."""
    person = signed_in()
    if person is None:
        return redirect(url_for("signin.form"))
    if not person.orgs:
        abort(404)
    return redirect(url_for("pages.runs", org=person.orgs[0]))


@pages.get("/orgs/<org>/runs")
def runs(org: str) -> str:
    person = page_access(org)
    ctx = web_context()
    after = request.args.get("after")
    page = ctx.reads.runs_page(
        org,
        status=None,
        workflow=None,
        after=after if after and is_run_id(after) else None,
        limit=ctx.settings.web_runs_per_page,
    )
    return render_template("runs.html", org=org, person=person, runs=page.items, next_after=page.next_after)


@pages.get("/orgs/<org>/runs/<run_id>")
def run(org: str, run_id: str) -> str:
    person = page_access(org)
    doc = org_run(org, run_id)
    ctx = web_context()
    return render_template(
        "run.html",
        org=org,
        person=person,
        run_id=run_id,
        run=doc,
        terminal=RunStatus(doc.status).is_terminal,
        steps=ctx.reads.steps(run_id),
        findings=ctx.reads.findings(run_id, ctx.settings.web_findings_per_page),
        rejected=ctx.reads.rejected_receipts(run_id, limit=REJECTED_OUTPUTS_SHOWN),
    )


@pages.get("/orgs/<org>/runs/<run_id>/steps/<int:number>/artifacts/<name>")
def artifact(org: str, run_id: str, number: int, name: str) -> Response:
    page_access(org)
    org_run(org, run_id)
    return serve_artifact(run_id, number, name, missing=NotFound)
