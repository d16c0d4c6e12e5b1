"""REST API v1 (DESIGN §14), for programs holding an org's API key.

Routes are declared with flask-openapi3, which validates each request against the pydantic models it names and
generates the OpenAPI 3.1 document at /api/v1/openapi.json from the same models (chosen over spectree because it is
built on Flask's own blueprints and pydantic v2, and emits 3.1 as-is). Every error is an RFC 9457 problem.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import re
from collections.abc import Callable
from typing import Any

from flask import Response, jsonify, request
from flask_openapi3 import APIBlueprint, FileStorage, Tag
from pydantic import BaseModel, Field

from functions.operations import (
    NotCancelable,
    NotRerunnable,
    RunNotFound,
    SubmissionRefused,
    SubmissionTooLarge,
    UnknownWorkflow,
)
from schemas.api import (
    Accepted,
    Caller,
    Canceled,
    FindingPage,
    PageQuery,
    Problem,
    RunDetail,
    RunPage,
    RunsQuery,
    WorkflowApplied,
    WorkflowList,
    WorkflowOut,
    finding_out,
    run_href,
    run_out,
    step_out,
    workflow_out,
)
from schemas.documents import RunDoc
from schemas.enums import Role, RunStatus
from schemas.log_labels import log_labels
from schemas.paths import is_run_id, is_slug
from web.artifacts import serve_artifact
from web.auth import api_access, api_caller
from web.context import org_run, web_context
from web.idempotency import idempotent_submission
from web.problems import ApiProblem, not_found
from web.workflow_uploads import MAX_WORKFLOW_REQUEST_BYTES, WorkflowUploadRefused, apply_uploaded

log = logging.getLogger("validibot.api")
BEARER = [{"api_key": []}]
# A finding's document id: its attempt's id and its index (functions/ingest/transitions.py).
_FINDING_ID = re.compile(r"^[0-9]{2}-[0-9]{1,3}-[0-9]{4,}$")
ERRORS: dict[Any, Any] = {401: Problem, 403: Problem, 404: Problem, 429: Problem}

WORKFLOW_PUT_ENDPOINT = "api_v1.put_workflow"

api = APIBlueprint(
    "api_v1",
    __name__,
    url_prefix="/api/v1",
    abp_security=BEARER,
    abp_responses=ERRORS,
    # Operation ids are the view functions' names (submit, list_runs, get_run, ...): what clients generate from.
    operation_id_callback=lambda *, name, **_: name,
)
runs_tag, workflows_tag, keys_tag = Tag(name="runs"), Tag(name="workflows"), Tag(name="keys")


@api.before_request
def body_limit() -> None:
    """A workflow and its resource files may be larger than one submission, which bounds every other body."""
    if request.endpoint == WORKFLOW_PUT_ENDPOINT:
        request.max_content_length = MAX_WORKFLOW_REQUEST_BYTES


class OrgPath(BaseModel):
    org: str


class RunPath(OrgPath):
    run_id: str


class ArtifactPath(RunPath):
    step: int
    name: str


class WorkflowPath(OrgPath):
    slug: str


class SubmitForm(BaseModel):
    file: FileStorage


class SubmitHeaders(BaseModel):
    idempotency_key: str | None = Field(
        default=None,
        alias="Idempotency-Key",
        max_length=255,
        description="Replays of a request with the same key and body return the same run (24 h).",
    )


class WorkflowForm(BaseModel):
    workflow: FileStorage = Field(description="The workflow file (YAML or JSON, DESIGN §12).")
    resources: list[FileStorage] = Field(
        default=[], description="Its resource files, each named by its path relative to the workflow file."
    )


def _body(model: BaseModel, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    response = jsonify(model.model_dump(mode="json"))
    response.status_code = status
    response.headers.update(headers or {})
    return response


def _run_of(org: str, run_id: str) -> RunDoc:
    return org_run(org, run_id, missing=not_found)


def _cursor_after(cursor: str | None, is_id: Callable[[str], bool]) -> str | None:
    """Cursors are opaque to clients: the id the next page starts after, encoded. A decoded id must have the form
    of the listing's ids before it reaches Firestore, where an empty one or one with a slash would be an error."""
    if cursor is None:
        return None
    try:
        after = base64.urlsafe_b64decode(cursor.encode() + b"==").decode()
    except (binascii.Error, UnicodeDecodeError):
        after = None
    if after is None or not is_id(after):
        raise ApiProblem(422, "The cursor is not one this API returned.")
    return after


def _is_finding_id(value: str) -> bool:
    return bool(_FINDING_ID.match(value))


def _cursor(next_after: str | None) -> str | None:
    return base64.urlsafe_b64encode(next_after.encode()).decode().rstrip("=") if next_after else None


@api.get("/whoami", tags=[keys_tag], responses={200: Caller}, summary="The org, role and id of the calling key")
def whoami() -> Response:
    caller = api_caller()
    key = caller.key
    return _body(Caller(org=key.org, role=key.role, key_id=caller.key_id, name=key.name))


@api.post(
    "/orgs/<org>/workflows/<slug>/runs",
    tags=[runs_tag],
    responses={202: Accepted, 409: Problem, 413: Problem, 422: Problem},
    summary="Submit a file to a workflow (multipart field `file`)",
)
def submit(path: WorkflowPath, form: SubmitForm, header: SubmitHeaders) -> Response:
    caller = api_access(path.org, Role.EXECUTOR)
    upload = form.file
    data = upload.stream
    digest = hashlib.sha256()
    for chunk in iter(lambda: data.read(1 << 20), b""):
        digest.update(chunk)
    data.seek(0)
    request_sha256 = hashlib.sha256(f"{path.slug}\n{upload.filename}\n{digest.hexdigest()}".encode()).hexdigest()

    def make_run(record: str | None) -> str:
        try:
            return web_context().operations.submit(
                path.org,
                path.slug,
                upload.filename or "",
                data,
                upload.mimetype or "application/octet-stream",
                idempotency_record=record,
            )
        except UnknownWorkflow as exc:
            # Checked by the submission itself (one read), before anything is uploaded: freed like any refusal.
            raise not_found() from exc
        except SubmissionTooLarge as exc:
            raise ApiProblem(413, f"{exc}.") from exc
        except SubmissionRefused as exc:
            raise ApiProblem(422, f"{exc}.") from exc

    def landed(record: str) -> str | None:
        return web_context().operations.submitted_run(path.org, path.slug, upload.filename or "", record)

    run_id, replayed = idempotent_submission(
        caller.key_hash, path.org, header.idempotency_key, request_sha256, make_run, landed
    )
    with log_labels(run_id=run_id):
        log.info(
            "submission %r to %s/%s by key %s: run %s%s",
            upload.filename,
            path.org,
            path.slug,
            caller.key_id,
            run_id,
            " (a replay)" if replayed else "",
        )
    headers = {"Location": run_href(path.org, run_id)}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return _body(Accepted(run_id=run_id, href=run_href(path.org, run_id)), 202, headers)


@api.get("/orgs/<org>/runs", tags=[runs_tag], responses={200: RunPage, 422: Problem}, summary="Runs, newest first")
def list_runs(path: OrgPath, query: RunsQuery) -> Response:
    api_access(path.org, Role.VIEWER)
    page = web_context().reads.runs_page(
        path.org,
        status=RunStatus(query.status) if query.status else None,
        workflow=query.workflow,
        after=_cursor_after(query.cursor, is_run_id),
        limit=query.limit,
    )
    return _body(RunPage(items=[run_out(i, r) for i, r in page.items], next_cursor=_cursor(page.next_after)))


@api.get("/orgs/<org>/runs/<run_id>", tags=[runs_tag], responses={200: RunDetail}, summary="A run with its steps")
def get_run(path: RunPath) -> Response:
    api_access(path.org, Role.VIEWER)
    run = _run_of(path.org, path.run_id)
    steps = [step_out(path.org, path.run_id, s) for s in web_context().reads.steps(path.run_id)]
    return _body(RunDetail(**run_out(path.run_id, run).model_dump(), steps=steps))


@api.get(
    "/orgs/<org>/runs/<run_id>/findings",
    tags=[runs_tag],
    responses={200: FindingPage, 422: Problem},
    summary="A run's findings, by step and index",
)
def list_findings(path: RunPath, query: PageQuery) -> Response:
    api_access(path.org, Role.VIEWER)
    _run_of(path.org, path.run_id)
    page = web_context().reads.findings_page(
        path.run_id, after=_cursor_after(query.cursor, _is_finding_id), limit=query.limit
    )
    return _body(FindingPage(items=[finding_out(f) for _, f in page.items], next_cursor=_cursor(page.next_after)))


@api.get(
    "/orgs/<org>/runs/<run_id>/artifacts/<int:step>/<name>",
    tags=[runs_tag],
    responses={200: {"description": "The file, exactly as its step recorded it"}, 409: Problem},
    summary="A file a step produced",
)
def get_artifact(path: ArtifactPath) -> Response:
    api_access(path.org, Role.VIEWER)
    _run_of(path.org, path.run_id)
    return serve_artifact(path.run_id, path.step, path.name, missing=not_found)


@api.post(
    "/orgs/<org>/runs/<run_id>/cancel",
    tags=[runs_tag],
    responses={200: Canceled, 409: Problem},
    summary="Cancel a run that has not ended",
)
def cancel(path: RunPath) -> Response:
    api_access(path.org, Role.EXECUTOR)
    _run_of(path.org, path.run_id)
    try:
        run = web_context().operations.cancel(path.run_id)
    except NotCancelable as exc:
        raise ApiProblem(409, str(exc)) from exc
    except RunNotFound as exc:
        raise ApiProblem(409, f"The run cannot be canceled yet: {exc}.") from exc
    return _body(Canceled(run_id=path.run_id, status=run.status))


@api.post(
    "/orgs/<org>/runs/<run_id>/rerun",
    tags=[runs_tag],
    responses={202: Accepted, 409: Problem},
    summary="Run a run's stored submission again, as a new run",
)
def rerun(path: RunPath) -> Response:
    api_access(path.org, Role.EXECUTOR)
    _run_of(path.org, path.run_id)
    try:
        new_run_id = web_context().operations.rerun(path.run_id)
    except NotRerunnable as exc:
        raise ApiProblem(409, str(exc)) from exc
    href = run_href(path.org, new_run_id)
    return _body(Accepted(run_id=new_run_id, href=href), 202, {"Location": href})


@api.get("/orgs/<org>/workflows", tags=[workflows_tag], responses={200: WorkflowList}, summary="The org's workflows")
def list_workflows(path: OrgPath) -> Response:
    api_access(path.org, Role.VIEWER)
    return _body(WorkflowList(items=[workflow_out(w) for w in web_context().store.workflows(path.org)]))


@api.get("/orgs/<org>/workflows/<slug>", tags=[workflows_tag], responses={200: WorkflowOut}, summary="A workflow")
def get_workflow(path: WorkflowPath) -> Response:
    api_access(path.org, Role.VIEWER)
    workflow = web_context().store.workflow(path.org, path.slug) if is_slug(path.slug) else None
    if workflow is None:
        raise not_found()
    return _body(workflow_out(workflow))


@api.put(
    "/orgs/<org>/workflows/<slug>",
    tags=[workflows_tag],
    responses={200: WorkflowApplied, 422: Problem},
    summary="Apply a workflow file: a new version when it changed (multipart `workflow`, `resources`)",
)
def put_workflow(path: WorkflowPath, form: WorkflowForm) -> Response:
    api_access(path.org, Role.AUTHOR)
    if not is_slug(path.slug):
        raise not_found()
    try:
        applied = apply_uploaded(path.org, path.slug, form.workflow, form.resources)
    except WorkflowUploadRefused as exc:
        raise ApiProblem(422, exc.detail, errors=exc.errors) from exc
    return _body(WorkflowApplied(slug=applied.slug, version=applied.version, changed=applied.changed))
