"""Uploading from the dashboard: pick a workflow, send a file (or a zip, for a workflow with inputs), land on the
live run page. The same submission path as the API (operations.submit), behind the same role (executor)."""

from __future__ import annotations

import time

from flask import Blueprint, jsonify, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from functions.operations import SubmissionRefused, SubmissionTooLarge
from schemas.enums import Role
from web.auth import page_access
from web.context import web_context

uploads = Blueprint("uploads", __name__)


@uploads.get("/orgs/<org>/upload")
def form(org: str) -> str:
    person = page_access(org, Role.EXECUTOR)
    workflows = web_context().store.workflows(org)
    chosen = request.args.get("workflow", "")
    return render_template("upload.html", org=org, person=person, workflows=workflows, chosen=chosen, error=None)


def _wait_for_run(run_id: str) -> None:
    """INTAKE makes the run from the upload's event, usually within moments: the run page is shown once it can be
    (after web_submit_wait_seconds it is shown anyway, and says it was not found yet)."""
    ctx = web_context()
    deadline = time.monotonic() + ctx.settings.web_submit_wait_seconds
    while ctx.reads.run(run_id) is None and time.monotonic() < deadline:
        time.sleep(0.1)


@uploads.post("/orgs/<org>/upload")
def submit(org: str) -> tuple[str | Response, int] | Response:
    person = page_access(org, Role.EXECUTOR)
    ctx = web_context()
    workflow = request.form.get("workflow", "")
    upload = request.files.get("file")
    wants_json = request.accept_mimetypes.best == "application/json"
    try:
        if upload is None or not upload.filename:
            raise SubmissionRefused("choose a file to upload")
        run_id = ctx.operations.submit(
            org, workflow, upload.filename, upload.stream, upload.mimetype or "application/octet-stream"
        )
    except SubmissionRefused as exc:
        status = 413 if isinstance(exc, SubmissionTooLarge) else 422
        if wants_json:
            return jsonify({"error": f"{exc}."}), status
        page = render_template(
            "upload.html",
            org=org,
            person=person,
            workflows=ctx.store.workflows(org),
            chosen=workflow,
            error=f"{exc}.",
        )
        return page, status
    _wait_for_run(run_id)
    location = url_for("pages.run", org=org, run_id=run_id)
    if wants_json:
        return jsonify({"run_id": run_id, "location": location})
    return redirect(location, code=303)
