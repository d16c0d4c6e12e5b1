"""The dashboard: a server-rendered list of an organization's runs and a page per run."""

from __future__ import annotations

from typing import Any

from flask import Flask, abort, jsonify, redirect, render_template, stream_with_context, url_for
from werkzeug.wrappers import Response

from schemas.documents import RunDoc
from schemas.enums import RunStatus
from schemas.paths import is_slug
from schemas.settings import Settings
from store.clients import firestore_client, storage_client
from store.objects import ObjectMissing, ObjectStore
from store.runs import RunStore


def create_app(
    settings: Settings | None = None, store: RunStore | None = None, objects: ObjectStore | None = None
) -> Flask:
    settings = settings or Settings()
    store = store or RunStore(firestore_client(settings.project))
    objects = objects or ObjectStore(storage_client(settings.project))
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

    @app.get("/orgs/<org>/runs/<run_id>/steps/<int:number>/artifacts/<name>")
    def artifact(org: str, run_id: str, number: int, name: str) -> Response:
        """Only an artifact the step's output listed: the URL never names a bucket path of its own."""
        org_run(org, run_id)
        step = store.step(run_id, number)
        listed = next((a for a in step.artifacts if a.name == name), None) if step else None
        if listed is None:
            abort(404)
        try:
            chunks = objects.stream(listed.uri)
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

    @app.get("/api/orgs/<org>/runs/<run_id>")
    def run_json(org: str, run_id: str) -> Response:
        doc = org_run(org, run_id)
        body: dict[str, Any] = {
            "run_id": run_id,
            **doc.model_dump(mode="json"),
            "steps": [s.model_dump(mode="json") for s in store.steps(run_id)],
        }
        return jsonify(body)

    @app.template_filter("filesize")
    def filesize(size: int) -> str:
        if size < 1024:
            return f"{size} bytes"
        if size < 1024 * 1024:
            return f"{size / 1024:.1f} KiB"
        return f"{size / (1024 * 1024):.1f} MiB"

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
