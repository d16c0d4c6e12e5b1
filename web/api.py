"""The JSON API: a run and its steps, for programs."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify
from werkzeug.wrappers import Response

from web.context import org_run, web_context

api = Blueprint("api", __name__, url_prefix="/api")


@api.get("/orgs/<org>/runs/<run_id>")
def run_json(org: str, run_id: str) -> Response:
    doc = org_run(org, run_id)
    body: dict[str, Any] = {
        "run_id": run_id,
        **doc.model_dump(mode="json"),
        "steps": [s.model_dump(mode="json") for s in web_context().reads.steps(run_id)],
    }
    return jsonify(body)
