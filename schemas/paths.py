"""The Cloud Storage object layout (DESIGN §3): building and parsing live together so they cannot drift.

inbox/{org}/{workflow}/{filename}
runs/{org}/{run_id}/submission/{filename}
runs/{org}/{run_id}/steps/{nn}-{step_key}/{attempt_id}/input.json
runs/{org}/{run_id}/steps/{nn}-{step_key}/{attempt_id}/output.json
runs/{org}/{run_id}/steps/{nn}-{step_key}/{attempt_id}/artifacts/...
"""

from __future__ import annotations

import hashlib
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict

SLUG_PATTERN = r"[a-z0-9][a-z0-9-]{0,62}"
_SLUG = re.compile(rf"^{SLUG_PATTERN}$")
_RUN_ID = re.compile(r"^[0-9a-f]{24}$")
_ATTEMPT_ID = re.compile(r"^[0-9]{2}-[0-9]{1,3}$")
_STEP_DIR = re.compile(rf"^(?P<number>[0-9]{{2}})-(?P<key>{SLUG_PATTERN})$")
# Separators, C0 and C1 controls, and the bidirectional marks, embeddings, overrides and isolates that make a name
# display as something it is not ("invoice\u202egpj.exe").
_FORBIDDEN_IN_FILENAME = re.compile(r"[/\\\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")

INPUT_NAME = "input.json"
OUTPUT_NAME = "output.json"
ARTIFACTS_FOLDER = "artifacts/"


class UnsafeName(ValueError):
    """A user-supplied name that must not become part of an object path."""


def is_slug(value: str) -> bool:
    return bool(_SLUG.match(value))


def is_run_id(value: str) -> bool:
    return bool(_RUN_ID.match(value))


def check_filename(name: str, max_bytes: int) -> str:
    """Return `name` if it is a safe leaf file name, else raise UnsafeName saying why."""
    if not name:
        raise UnsafeName("the file name is empty")
    size = len(name.encode("utf-8", errors="surrogatepass"))
    if size > max_bytes:
        raise UnsafeName(f"the file name is {size} bytes long in UTF-8; the limit is {max_bytes} bytes")
    if _FORBIDDEN_IN_FILENAME.search(name):
        raise UnsafeName(
            f"the file name {name!r} contains a path separator, a control character or a bidirectional override; "
            "use a plain file name"
        )
    if name in (".", ".."):
        raise UnsafeName(f"the file name {name!r} names a folder, not a file")
    if name != name.strip():
        raise UnsafeName(f"the file name {name!r} has leading or trailing white space")
    return name


def run_id_for(bucket: str, name: str, generation: int) -> str:
    """A stable id per uploaded object version, so every redelivery of its event names the same run."""
    return hashlib.sha256(f"{bucket}/{name}#{generation}".encode()).hexdigest()[:24]


def attempt_id_for(step_number: int, attempt_number: int) -> str:
    return f"{step_number:02d}-{attempt_number}"


def step_doc_id(step_number: int) -> str:
    return f"{step_number:02d}"


# On an inbox object: the run it re-runs (INTAKE links the new run when that run's submission has the same bytes).
RERUN_OF_METADATA_KEY = "validibot-rerun-of"
# On an API submission's inbox object: the Idempotency-Key record it was uploaded for (web/idempotency.py).
IDEMPOTENCY_METADATA_KEY = "validibot-idempotency-record"


def inbox_object(org: str, workflow: str, filename: str) -> str:
    return f"inbox/{org}/{workflow}/{filename}"


def resource_object(org: str, sha256: str, name: str) -> str:
    """A workflow's resource file, content-addressed: `name` is its path relative to the workflow file."""
    return f"resources/{org}/{sha256}/{name}"


def submission_object(org: str, run_id: str, filename: str) -> str:
    return f"runs/{org}/{run_id}/submission/{filename}"


def steps_prefix(org: str, run_id: str) -> str:
    """Where a run's step objects live: input.json, output.json and artifacts of every attempt."""
    return f"runs/{org}/{run_id}/steps/"


def attempt_prefix(org: str, run_id: str, step_number: int, step_key: str, attempt_id: str) -> str:
    return f"{steps_prefix(org, run_id)}{step_number:02d}-{step_key}/{attempt_id}/"


def gs_uri(bucket: str, name: str) -> str:
    return f"gs://{bucket}/{name}"


def parse_gs_uri(uri: str) -> tuple[str, str]:
    if not uri.startswith("gs://"):
        raise ValueError(f"not a gs:// URI: {uri!r}")
    bucket, _, name = uri[len("gs://") :].partition("/")
    if not bucket or not name:
        raise ValueError(f"a gs:// URI needs a bucket and an object name: {uri!r}")
    return bucket, name


class InboxPath(BaseModel):
    """An object under inbox/. Segments are raw: INTAKE checks them and records why it refuses any."""

    model_config = ConfigDict(frozen=True)
    kind: Literal["submission"] = "submission"
    org: str
    workflow: str
    filename: str


class StepObjectPath(BaseModel):
    model_config = ConfigDict(frozen=True)
    kind: Literal["input", "output"]
    org: str
    run_id: str
    step_number: int
    step_key: str
    attempt_id: str


ObjectPath = InboxPath | StepObjectPath
ObjectKind = Literal["submission", "input", "output"]


def parse_object_name(name: str) -> ObjectPath | None:
    """Classify an object name by the layout above; None for anything that triggers nothing."""
    parts = name.split("/")
    if parts[0] == "inbox":
        # inbox/{org}/{workflow}/{rest...}: a rest with slashes is an unsafe name, not someone else's object, and
        # inbox/{org}/{file} lacks its workflow: both become refused runs the org can see, saying why.
        if len(parts) < 3 or not parts[1] or not parts[-1]:
            return None
        if len(parts) == 3:
            return InboxPath(org=parts[1], workflow="", filename=parts[2])
        return InboxPath(org=parts[1], workflow=parts[2], filename="/".join(parts[3:]))
    if parts[0] == "runs" and len(parts) == 7 and parts[3] == "steps":
        _, org, run_id, _, step_dir, attempt_id, leaf = parts
        step = _STEP_DIR.match(step_dir)
        if not (step and is_slug(org) and _RUN_ID.match(run_id) and _ATTEMPT_ID.match(attempt_id)):
            return None
        kind = {INPUT_NAME: "input", OUTPUT_NAME: "output"}.get(leaf)
        if kind is None:
            return None
        return StepObjectPath(
            kind=kind,
            org=org,
            run_id=run_id,
            step_number=int(step["number"]),
            step_key=step["key"],
            attempt_id=attempt_id,
        )
    return None
