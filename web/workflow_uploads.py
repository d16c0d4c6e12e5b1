"""Applying a workflow file sent over the API: the file and its resource files arrive as multipart parts, and are
checked and applied exactly as `validibot workflows apply` checks and applies files on disk."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Any

import yaml
from werkzeug.datastructures import FileStorage

from functions.workflows import (
    MAX_RESOURCE_BYTES,
    MAX_RESOURCES_PER_STEP,
    Applied,
    ResourceRefused,
    WorkflowProblem,
    check_resource_names,
    check_resource_pattern,
    check_workflow,
)
from web.context import web_context

MAX_WORKFLOW_BYTES = 1024 * 1024
# A request's parts: the workflow file and its resource files, which its steps may share.
MAX_RESOURCES = MAX_RESOURCES_PER_STEP
# The whole PUT request: a body past it is refused before it is read (Flask's limit for the other routes is a
# submission's size).
MAX_WORKFLOW_REQUEST_BYTES = 64 * 1024 * 1024


class WorkflowUploadRefused(ValueError):
    def __init__(self, detail: str, problems: list[WorkflowProblem] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors: list[dict[str, Any]] | None = (
            [{"step": p.step, "field": p.field, "message": p.message} for p in problems] if problems else None
        )


@dataclass(frozen=True)
class UploadedResources:
    """The resource parts of a request, by the name each was sent under (its path relative to the workflow)."""

    files: dict[str, bytes]

    def find(self, pattern: str) -> list[str]:
        """As for files on disk (deploy/workflow_files.py): the same pattern and name checks, over the parts."""
        check_resource_pattern(pattern)
        # A glob's `*` stays within one folder, as on disk: the same number of path parts.
        depth = pattern.count("/")
        names = sorted(n for n in self.files if n.count("/") == depth and fnmatch.fnmatchcase(n, pattern))
        if not names:
            raise ResourceRefused(f"{pattern!r} names no file sent with the workflow")
        return check_resource_names(pattern, names)

    def read(self, name: str) -> bytes:
        return self.files[name]


def _read(part: FileStorage, limit: int, what: str) -> bytes:
    data = part.stream.read(limit + 1)
    if len(data) > limit:
        raise WorkflowUploadRefused(f"{what} is over {limit} bytes")
    return data


def apply_uploaded(org: str, slug: str, workflow: FileStorage, resources: list[FileStorage]) -> Applied:
    if len(resources) > MAX_RESOURCES:
        raise WorkflowUploadRefused(f"{len(resources)} resource files; a workflow may send {MAX_RESOURCES}")
    names = [part.filename or "" for part in resources]
    if "" in names or len(set(names)) < len(names):
        raise WorkflowUploadRefused("every resource part needs a file name of its own (its path in the workflow)")
    files = {part.filename or "": _read(part, MAX_RESOURCE_BYTES, f"resource {part.filename}") for part in resources}
    try:
        data = yaml.safe_load(_read(workflow, MAX_WORKFLOW_BYTES, "the workflow file").decode("utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        raise WorkflowUploadRefused(f"the workflow file cannot be read as YAML or JSON: {exc}") from exc
    if isinstance(data, dict) and (data.get("org"), data.get("slug")) != (org, slug):
        raise WorkflowUploadRefused(
            f"the file is workflow {data.get('org')}/{data.get('slug')}; this request applies {org}/{slug}"
        )
    source = UploadedResources(files)
    checked, problems = check_workflow(data, workflow.filename or "workflow", source.find)
    if checked is None:
        raise WorkflowUploadRefused("; ".join(str(p) for p in problems), problems)
    try:
        return web_context().workflows.apply(checked, source.read)
    except LookupError as exc:
        raise WorkflowUploadRefused(str(exc.args[0])) from exc
