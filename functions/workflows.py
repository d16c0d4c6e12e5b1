"""Workflows as files (DESIGN §12): check what an author wrote, pin its resource files, and apply it as a new
version, or as nothing at all when the content is unchanged. The CLI reads the files; the REST API will hand over
the same documents. Runs keep the snapshot of the version they started with, so a new version changes no run."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import PurePosixPath

from pydantic import ValidationError

from functions.stage import StageContext
from jobs.assertions import AssertionSyntaxError, compile_check, referenced_outputs
from jobs.registry import KNOWN_RESULTS, RESOURCE_FIELDS, UnknownValidator, get_validator
from schemas.changes import Versioned, Write, workflow_path, workflow_version_path
from schemas.documents import StepSpec, WorkflowDoc
from schemas.envelopes import FileRef, InputRole
from schemas.paths import UnsafeName, check_filename, gs_uri, resource_object
from schemas.workflow_file import StepFile, WorkflowFile
from store.ports import Conflict, ObjectConflict

# Resolves a resource name or glob (relative to the workflow file) to the names of the files it matches; raises
# ResourceRefused for a pattern or a file that cannot be one.
FindResources = Callable[[str], list[str]]


class ResourceRefused(ValueError):
    pass


# What a workflow's resource files may be, wherever they come from (files beside a workflow file on disk, or parts
# of an API request): schemas and rule sets, each read whole into memory when applied.
MAX_RESOURCE_NAME_BYTES = 255  # each part of a resource's path, in UTF-8: what the runtime accepts for its files
MAX_RESOURCE_BYTES = 20 * 1024 * 1024
MAX_RESOURCES_PER_STEP = 200


def check_resource_pattern(pattern: str) -> None:
    """A resource name or glob must stay inside the workflow's folder: ResourceRefused otherwise."""
    parts = PurePosixPath(pattern).parts
    if not parts or parts == (".",) or PurePosixPath(pattern).is_absolute() or ".." in parts or "\\" in pattern:
        raise ResourceRefused(f"{pattern!r} is not a path inside the workflow file's folder")


def check_resource_names(pattern: str, names: list[str]) -> list[str]:
    """The files a pattern matched, each a name the runtime can write (checked part by part), at most
    MAX_RESOURCES_PER_STEP of them; ResourceRefused otherwise."""
    if len(names) > MAX_RESOURCES_PER_STEP:
        raise ResourceRefused(f"{pattern!r} names {len(names)} files; a step may have {MAX_RESOURCES_PER_STEP}")
    for name in names:
        try:
            for part in name.split("/"):
                check_filename(part, MAX_RESOURCE_NAME_BYTES)
        except UnsafeName as exc:
            raise ResourceRefused(f"{name!r} cannot be a resource file's name: {exc}") from exc
    return names


@dataclass(frozen=True)
class WorkflowProblem:
    """One thing wrong with a workflow file, named as precisely as it can be: file, step key, field."""

    source: str
    message: str
    step: str | None = None
    field: str | None = None

    def __str__(self) -> str:
        where = [self.source]
        if self.step is not None:
            where.append(f"step {self.step!r}")
        if self.field:
            where.append(self.field)
        return f"{': '.join(where)}: {self.message}"


@dataclass(frozen=True)
class CheckedWorkflow:
    file: WorkflowFile
    # Each step's resource file names, as written (relative to the workflow file), in order.
    resources: dict[str, list[str]] = field(default_factory=dict)


def check_workflow(
    data: object, source: str, find: FindResources
) -> tuple[CheckedWorkflow | None, list[WorkflowProblem]]:
    """Everything wrong with a workflow document, all at once; the checked workflow when nothing is."""
    try:
        workflow = WorkflowFile.model_validate(data)
    except ValidationError as exc:
        return None, [_problem(source, data, error) for error in exc.errors()]
    problems: list[WorkflowProblem] = []
    seen: set[str] = set()
    resources: dict[str, list[str]] = {}
    for step in workflow.steps:
        if step.key in seen:
            problems.append(
                WorkflowProblem(source, "the key is used by an earlier step; keys must be unique", step.key, "key")
            )
        seen.add(step.key)
        resources[step.key] = _check_step(source, step, find, problems)
    return (CheckedWorkflow(workflow, resources) if not problems else None), problems


def _check_step(source: str, step: StepFile, find: FindResources, problems: list[WorkflowProblem]) -> list[str]:
    try:
        validator = get_validator(step.validator)
    except UnknownValidator as exc:
        problems.append(WorkflowProblem(source, str(exc.args[0]), step.key, "validator"))
        return []
    try:
        validator.config_model.model_validate(step.config)
    except ValidationError as exc:
        for error in exc.errors():
            where = ".".join(str(part) for part in ("config", *error["loc"]))
            problems.append(WorkflowProblem(source, error["msg"], step.key, where))
    except ValueError as exc:
        problems.append(WorkflowProblem(source, str(exc), step.key, "config"))
    known = KNOWN_RESULTS.get(step.validator)
    for index, assertion in enumerate(step.assertions):
        where = f"assertions[{index}]"
        try:
            compile_check(assertion)
        except AssertionSyntaxError as exc:
            problems.append(WorkflowProblem(source, str(exc), step.key, f"{where}.expr"))
            continue
        unknown = sorted(referenced_outputs(assertion) - known) if known is not None else []
        if unknown:
            problems.append(
                WorkflowProblem(
                    source,
                    f"{step.validator} reports no {', '.join(unknown)} (it reports {', '.join(sorted(known or ()))})",
                    step.key,
                    f"{where}.expr",
                )
            )
    return _step_resources(source, step, find, problems)


def _step_resources(source: str, step: StepFile, find: FindResources, problems: list[WorkflowProblem]) -> list[str]:
    wanted: list[tuple[str, str]] = []
    for key in RESOURCE_FIELDS.get(step.validator, ()):
        value = step.config.get(key)
        if isinstance(value, str):
            wanted.append((f"config.{key}", value))
    listed = step.config.get("resources", [])
    for index, pattern in enumerate(listed if isinstance(listed, list) else []):
        wanted.append((f"config.resources[{index}]", str(pattern)))
    names: list[str] = []
    for where, pattern in wanted:
        try:
            found = find(pattern)
        except ResourceRefused as exc:
            problems.append(WorkflowProblem(source, str(exc), step.key, where))
            continue
        if not found:
            problems.append(
                WorkflowProblem(source, f"no resource file {pattern!r} next to the workflow file", step.key, where)
            )
        names.extend(name for name in found if name not in names)
    return names


def _problem(source: str, data: object, error: dict) -> WorkflowProblem:
    loc = list(error["loc"])
    step = None
    if len(loc) >= 2 and loc[0] == "steps" and isinstance(loc[1], int):
        steps = data.get("steps") if isinstance(data, dict) else None
        found = steps[loc[1]] if isinstance(steps, list) and loc[1] < len(steps) else None
        key = found.get("key") if isinstance(found, dict) else None
        step = str(key) if key else f"#{loc[1] + 1}"
        loc = loc[2:]
    return WorkflowProblem(source, error["msg"], step, ".".join(str(part) for part in loc) or None)


def workflow_doc(checked: CheckedWorkflow, pinned: dict[str, FileRef], *, version: int) -> WorkflowDoc:
    """The document a version is stored as: the file's content, each step with its resource files pinned."""
    file = checked.file
    steps = [
        StepSpec(**step.model_dump(), resource_files=[pinned[name] for name in checked.resources.get(step.key, [])])
        for step in file.steps
    ]
    doc = WorkflowDoc(
        **file.model_dump(exclude={"steps", "inputs"}),
        version=version,
        steps=steps,
        inputs=[InputRole(role=role, patterns=patterns) for role, patterns in file.inputs.items()],
    )
    return doc.model_copy(update={"content_sha256": content_digest(doc)})


def content_digest(doc: WorkflowDoc) -> str:
    """The sha256 of what a version holds (resource files by their bytes' sha256), its number aside."""
    content = doc.model_dump(mode="json", exclude={"version", "content_sha256"})
    for step in content["steps"]:
        step["resource_files"] = [{"name": ref["name"], "sha256": ref["sha256"]} for ref in step["resource_files"]]
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class Applied:
    slug: str
    version: int
    changed: bool


def plan_apply(current: Versioned[WorkflowDoc] | None, new: WorkflowDoc, now: datetime) -> WorkflowDoc | None:
    """The next version (`new`'s content numbered after `current`), or None when `current` holds that content."""
    if current is not None and current.doc.content_sha256 == new.content_sha256:
        return None
    return new.model_copy(update={"version": current.doc.version + 1 if current else 1, "applied_at": now})


def version_writes(current: Versioned[WorkflowDoc] | None, version: WorkflowDoc) -> list[Write]:
    """The head document replaced on the condition that it is still `current`, and the version kept for good."""
    head = workflow_path(version.org, version.slug)
    return [
        Write(head, version, "replace", current.update_time) if current else Write(head, version, "create"),
        Write(workflow_version_path(version.org, version.slug, version.version), version, "create"),
    ]


@dataclass(frozen=True)
class Workflows:
    """Applying checked workflows: the resource files stored create-only, then the version committed."""

    context: StageContext

    def apply(self, checked: CheckedWorkflow, read: Callable[[str], bytes]) -> Applied:
        """`read(name)` gives a resource file's bytes. Raises LookupError when the org does not exist."""
        store, file = self.context.store, checked.file
        if store.org(file.org) is None:
            raise LookupError(f"no org {file.org!r}; create it first")
        names = sorted({name for names in checked.resources.values() for name in names})
        pinned = {name: self._store_resource(file.org, name, read(name)) for name in names}
        for _ in range(4):
            current = store.workflow_head(file.org, file.slug)
            version = plan_apply(current, workflow_doc(checked, pinned, version=0), self.context.clock())
            if version is None:
                assert current is not None
                return Applied(file.slug, current.doc.version, changed=False)
            try:
                store.commit(version_writes(current, version))
            except Conflict:
                continue
            return Applied(file.slug, version.version, changed=True)
        raise RuntimeError(f"workflow {file.slug} kept changing while it was applied; try again")

    def _store_resource(self, org: str, name: str, data: bytes) -> FileRef:
        sha256 = hashlib.sha256(data).hexdigest()
        uri = gs_uri(self.context.settings.bucket, resource_object(org, sha256, name))
        try:
            stored = self.context.objects.write_new(uri, data, "application/octet-stream")
        except ObjectConflict:
            # Content-addressed: what is there under this sha256 is these bytes (checked when a run reads it).
            found = self.context.objects.stat(uri)
            if found is None:
                raise
            stored = found
        return FileRef(
            name=name, role="resource", uri=uri, size_bytes=len(data), sha256=sha256, generation=stored.generation
        )
