"""The dashboard's pages: an organization's runs (filtered, a page at a time), a run, its artifacts, and the
org's workflows; each for the org's signed-in members only."""

from __future__ import annotations

from flask import Blueprint, abort, redirect, render_template, request, url_for
from werkzeug.exceptions import NotFound
from werkzeug.wrappers import Response

from schemas.enums import RunStatus
from schemas.paths import is_run_id, is_slug
from web.artifacts import serve_artifact
from web.auth import page_access, signed_in
from web.context import org_run, web_context
from web.live import run_view

pages = Blueprint("pages", __name__)

RECENT_RUNS_SHOWN = 20
VERSIONS_SHOWN = 20


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
    # Filters that are not a status or a workflow slug are ignored, as a search box would.
    status = request.args.get("status", "")
    workflow = request.args.get("workflow", "")
    after = request.args.get("after", "")
    page = ctx.reads.runs_page(
        org,
        status=RunStatus(status) if status in RunStatus.__members__ else None,
        workflow=workflow if is_slug(workflow) else None,
        after=after if is_run_id(after) else None,
        limit=ctx.settings.web_runs_per_page,
    )
    return render_template(
        "runs.html",
        org=org,
        person=person,
        runs=page.items,
        next_after=page.next_after,
        statuses=[s.value for s in RunStatus],
        workflows=[w.slug for w in ctx.store.workflows(org)],
        status=status if status in RunStatus.__members__ else "",
        workflow=workflow if is_slug(workflow) else "",
    )


@pages.get("/orgs/<org>/runs/<run_id>")
def run(org: str, run_id: str) -> str:
    person = page_access(org)
    return render_template("run.html", person=person, **run_view(org, run_id))


@pages.get("/orgs/<org>/runs/<run_id>/steps/<int:number>/artifacts/<name>")
def artifact(org: str, run_id: str, number: int, name: str) -> Response:
    page_access(org)
    org_run(org, run_id)
    return serve_artifact(run_id, number, name, missing=NotFound)


@pages.get("/orgs/<org>/workflows")
def workflows(org: str) -> str:
    person = page_access(org)
    return render_template("workflows.html", org=org, person=person, workflows=web_context().store.workflows(org))


@pages.get("/orgs/<org>/workflows/<slug>")
def workflow(org: str, slug: str) -> str:
    person = page_access(org)
    ctx = web_context()
    current = ctx.store.workflow(org, slug) if is_slug(slug) else None
    if current is None:
        abort(404)
    oldest_shown = max(1, current.version - VERSIONS_SHOWN + 1)
    versions = [ctx.store.workflow_version(org, slug, n) for n in range(current.version, oldest_shown - 1, -1)]
    recent = ctx.reads.runs_page(org, status=None, workflow=slug, after=None, limit=RECENT_RUNS_SHOWN)
    return render_template(
        "workflow.html",
        org=org,
        person=person,
        workflow=current,
        versions=[v for v in versions if v is not None],
        runs=recent.items,
    )
