"""The dashboard: a server-rendered list of an organization's runs and a page per run."""

from __future__ import annotations

from typing import Any

from flask import Flask, abort, jsonify, redirect, render_template, url_for
from werkzeug.wrappers import Response

from schemas.documents import RunDoc
from schemas.enums import RunStatus
from schemas.paths import is_slug
from schemas.settings import Settings
from store.clients import firestore_client
from store.runs import RunStore


def create_app(settings: Settings | None = None, store: RunStore | None = None) -> Flask:
    settings = settings or Settings()
    store = store or RunStore(firestore_client(settings.project))
    app = Flask(__name__)

    def org_run(org: str, run_id: str) -> RunDoc:
        """A run only through the organization that owns it: another org's run id is simply not found."""
        found = store.run(run_id) if is_slug(org) else None
        if found is None or found.doc.org != org:
            abort(404)
        return found.doc

    @app.get("/healthz")
    def healthz() -> str:
        return "ok"

    @app.get("/")
    def index() -> Response:
        return redirect(url_for("runs", org=settings.default_org))

    @app.get("/orgs/<org>/runs")
    def runs(org: str) -> str:
        if not is_slug(org):
            abort(404)
        return render_template("runs.html", org=org, runs=store.runs_for_org(org, settings.web_runs_per_page))

    @app.get("/orgs/<org>/runs/<run_id>")
    def run(org: str, run_id: str) -> str:
        doc = org_run(org, run_id)
        return render_template(
            "run.html",
            org=org,
            run_id=run_id,
            run=doc,
            terminal=RunStatus(doc.status).is_terminal,
            steps=store.steps(run_id),
            findings=store.findings(run_id, settings.web_findings_per_page),
            rejected=store.rejected_receipts(run_id, limit=20),
        )

    @app.get("/api/orgs/<org>/runs/<run_id>")
    def run_json(org: str, run_id: str) -> Response:
        doc = org_run(org, run_id)
        body: dict[str, Any] = {
            "run_id": run_id,
            **doc.model_dump(mode="json"),
            "steps": [s.model_dump(mode="json") for s in store.steps(run_id)],
        }
        return jsonify(body)

    @app.template_filter("duration")
    def duration(ms: int | None) -> str:
        if ms is None:
            return "—"
        return f"{ms} ms" if ms < 10_000 else f"{ms / 1000:.1f} s"

    @app.template_filter("number")
    def number(value: float) -> str:
        return f"{value:g}"

    @app.template_filter("when")
    def when(value: Any) -> str:
        return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else "—"

    return app
