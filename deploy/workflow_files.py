"""Workflow files on disk (DESIGN §12): YAML or JSON, their resource files found relative to them and never
outside their folder. What is checked and applied is in functions/workflows.py; this is only the reading."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from functions.workflows import (
    MAX_RESOURCE_BYTES,
    CheckedWorkflow,
    ResourceRefused,
    WorkflowProblem,
    check_resource_names,
    check_resource_pattern,
    check_workflow,
)
from schemas.documents import WorkflowDoc
from schemas.workflow_file import WorkflowFile

SUFFIXES = (".yaml", ".yml", ".json")


@dataclass(frozen=True)
class WorkflowSource:
    path: Path

    @property
    def folder(self) -> Path:
        return self.path.parent.resolve()

    def find(self, pattern: str) -> list[str]:
        """The files a resource name or glob names, as paths relative to the workflow's folder (inside it only).
        ResourceRefused when the pattern or a file it names cannot be a resource file."""
        check_resource_pattern(pattern)
        try:
            matched = sorted(self.folder.glob(pattern))
        except (ValueError, IndexError, OSError) as exc:
            raise ResourceRefused(f"{pattern!r} is not a usable name or glob ({exc})") from exc
        found = [
            path
            for path in matched
            if path.is_file() and not path.is_symlink() and path.resolve().is_relative_to(self.folder)
        ]
        names = check_resource_names(pattern, [path.relative_to(self.folder).as_posix() for path in found])
        for name, path in zip(names, found, strict=True):
            if path.stat().st_size > MAX_RESOURCE_BYTES:
                raise ResourceRefused(f"{name} is {path.stat().st_size} bytes; a resource file may be 20 MiB")
        return names

    def read(self, name: str) -> bytes:
        path = (self.folder / name).resolve()
        if not path.is_relative_to(self.folder) or path.stat().st_size > MAX_RESOURCE_BYTES:
            raise ValueError(f"{name}: not a resource file of {self.path} (outside its folder, or over 20 MiB)")
        return path.read_bytes()


def workflow_paths(paths: list[Path]) -> list[Path]:
    """The workflow files named, folders expanded to the files directly in them."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(p for p in path.iterdir() if p.suffix in SUFFIXES and p.is_file()))
        else:
            found.append(path)
    return found


def check_file(path: Path) -> tuple[CheckedWorkflow | None, list[WorkflowProblem]]:
    source = WorkflowSource(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        return None, [WorkflowProblem(str(path), f"cannot be read as YAML or JSON: {exc}")]
    return check_workflow(data, str(path), source.find)


def dump(data: object, as_json: bool) -> str:
    if as_json:
        return json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=110)


def exported(workflow: WorkflowDoc) -> dict[str, Any]:
    """A stored version back in the file format: what `validibot workflows apply` would apply as it."""
    data = workflow.model_dump(mode="json", exclude={"version", "content_sha256", "applied_at"})
    data["inputs"] = {declared["role"]: declared["patterns"] for declared in data["inputs"]}
    for step in data["steps"]:
        step.pop("resource_files", None)
        if step.get("timeout_seconds") is None:
            step.pop("timeout_seconds", None)
        if not step.get("assertions"):
            step.pop("assertions", None)
    return WorkflowFile.model_validate(data).model_dump(mode="json", exclude_defaults=False)
