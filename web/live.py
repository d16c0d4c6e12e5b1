"""The live run page: its changing part as a fragment, and a stream of Server-Sent Events saying when it changed.

Each open page holds one watch (a Firestore listener on the run and one on its steps, through the RunWatch port)
and one of the web's threads, for as long as it is open and the run goes on: the stream ends when the run ends,
after web_live_max_seconds, or when a keep-alive finds the page gone, and the watch is released with it.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

from flask import Blueprint, Response, abort, jsonify, render_template
from werkzeug.wrappers import Response as BaseResponse

from schemas.enums import RunStatus
from web.auth import page_access
from web.context import org_run, web_context
from web.results import step_charts

live = Blueprint("live", __name__)

REJECTED_OUTPUTS_SHOWN = 20


def run_view(org: str, run_id: str) -> dict[str, object]:
    """What the run page and its live part render: the run, its steps, findings, charts and rejected outputs."""
    doc = org_run(org, run_id)
    ctx = web_context()
    steps = ctx.reads.steps(run_id)
    terminal = RunStatus(doc.status).is_terminal
    return {
        "org": org,
        "run_id": run_id,
        "run": doc,
        "terminal": terminal,
        "steps": steps,
        "findings": ctx.reads.findings(run_id, ctx.settings.web_findings_per_page),
        "rejected": ctx.reads.rejected_receipts(run_id, limit=REJECTED_OUTPUTS_SHOWN),
        # Results are charted once there are results: a running step has none yet.
        "charts_by_step": [(s.number, step_charts(s)) for s in steps if s.artifacts],
    }


@live.get("/orgs/<org>/runs/<run_id>/live")
def fragment(org: str, run_id: str) -> str:
    page_access(org)
    return render_template("run_live.html", **run_view(org, run_id))


def _event(name: str, data: dict[str, object]) -> str:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n"


@live.get("/orgs/<org>/runs/<run_id>/events")
def events(org: str, run_id: str) -> BaseResponse:
    page_access(org)
    run = org_run(org, run_id)
    ctx = web_context()
    settings = ctx.settings
    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    if RunStatus(run.status).is_terminal:
        return Response(_event("end", {"status": run.status}), mimetype="text/event-stream", headers=headers)
    changed = threading.Event()
    stop = ctx.watch.watch(run_id, changed.set, settings.web_max_live_pages) if ctx.watch else None
    if stop is None:
        abort(503)  # the page polls instead

    def stream() -> Iterator[str]:
        try:
            deadline = time.monotonic() + settings.web_live_max_seconds
            yield "retry: 3000\n\n"
            while time.monotonic() < deadline:
                if not changed.wait(settings.web_live_heartbeat_seconds):
                    # Also how a closed page is noticed: writing to it fails, and the stream is closed.
                    yield ": keep-alive\n\n"
                    continue
                changed.clear()
                current = ctx.reads.run(run_id)
                status = current.status if current else None
                yield _event("changed", {"status": status})
                if status is None or RunStatus(status).is_terminal:
                    yield _event("end", {"status": status})
                    return
        finally:
            stop()

    response = Response(stream(), mimetype="text/event-stream", headers=headers)
    # Also when the body is never read (a HEAD request, an error before the first chunk): the watch always ends.
    response.call_on_close(stop)
    return response


@live.get("/healthz/live")
def watching() -> BaseResponse:
    """How many live pages this web process is streaming to (each holds one watch): for operators and tests."""
    ctx = web_context()
    return jsonify({"live_pages": ctx.watch.watching if ctx.watch else 0})
