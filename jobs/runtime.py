"""Turn an input envelope into an output envelope. Shared by the inline launcher and the job entry point."""

from __future__ import annotations

import hashlib
import logging
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from jobs.registry import UnknownValidator, get_validator
from jobs.validators.base import ArtifactFile, ConfigError, InputFile, ValidationContext, ValidationResult
from schemas.enums import Severity
from schemas.envelopes import (
    RUNTIME_CODE,
    TIMEOUT_CODE,
    Artifact,
    InputEnvelope,
    Message,
    OutputEnvelope,
    Timing,
)
from schemas.paths import UnsafeName, check_filename
from schemas.settings import Settings
from store.ports import IntegrityError, ObjectConflict, ObjectMissing, ObjectStore, download_verified

log = logging.getLogger(__name__)

MAX_INPUT_FILENAME = 255
ARTIFACTS_FOLDER = "artifacts/"


def _inside(root: Path, *parts: str) -> Path:
    path = root.joinpath(*parts).resolve()
    if not path.is_relative_to(root.resolve()):
        raise UnsafeName(f"{'/'.join(parts)!r} escapes the scratch directory")
    return path


def _fetch_inputs(envelope: InputEnvelope, objects: ObjectStore, scratch: Path) -> list[InputFile]:
    files = []
    for index, ref in enumerate(envelope.input_files):
        # Each file gets its own folder so the validator sees the user's name (extensions matter to some
        # tools) while the path stays inside the scratch directory whatever that name is.
        dest = _inside(scratch, "inputs", str(index), check_filename(ref.name, MAX_INPUT_FILENAME))
        files.append(InputFile(ref=ref, path=download_verified(objects, ref, dest)))
    return files


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _store_artifacts(
    envelope: InputEnvelope, files: list[ArtifactFile], objects: ObjectStore, max_bytes: int
) -> tuple[list[Artifact], list[Message]]:
    """Upload create-only; a name already taken (a twin job of the same attempt) is described as stored."""
    artifacts, notes = [], []
    prefix = envelope.context.execution_bundle_uri + ARTIFACTS_FOLDER
    for file in files:
        name = check_filename(file.path.name, MAX_INPUT_FILENAME)
        size = file.path.stat().st_size
        if size > max_bytes:
            notes.append(
                Message(
                    severity=Severity.INFO,
                    code="artifact_too_large",
                    text=f"{name} ({size} bytes) was not stored: over VALIDIBOT_MAX_ARTIFACT_BYTES ({max_bytes})",
                )
            )
            continue
        try:
            stored = objects.write_new_file(prefix + name, file.path, file.mime_type, _file_sha256(file.path))
        except ObjectConflict:
            found = objects.stat(prefix + name)
            if found is None or found.sha256 is None:
                raise
            stored = found
        artifacts.append(
            Artifact(name=name, uri=stored.uri, size_bytes=stored.size, sha256=stored.sha256, mime_type=file.mime_type)
        )
    return artifacts, notes


def _validate(envelope: InputEnvelope, objects: ObjectStore, scratch: Path) -> ValidationResult:
    """Run the envelope's validator; every failure becomes a result with a user-facing message."""
    deadline = time.monotonic() + envelope.context.timeout_seconds
    try:
        validator = get_validator(envelope.validator.id)
        files = _fetch_inputs(envelope, objects, scratch)
        workdir = _inside(scratch, "work")
        workdir.mkdir()
        return validator.validate(
            ValidationContext(
                files=files,
                inputs=envelope.inputs,
                workdir=workdir,
                timeout_seconds=envelope.context.timeout_seconds,
                deadline=deadline,
            )
        )
    except IntegrityError as exc:
        return ValidationResult(runtime_error=f"an input file changed after the run was created: {exc}")
    except ObjectMissing as exc:
        return ValidationResult(runtime_error=f"an input file is missing: {exc}")
    except (UnknownValidator, ConfigError, UnsafeName) as exc:
        return ValidationResult(runtime_error=str(exc))
    except Exception:
        # The traceback is for operators; the user sees a plain statement.
        log.exception("validator %s crashed on run %s", envelope.validator.id, envelope.run_id)
        return ValidationResult(runtime_error=f"the {envelope.validator.id} validator failed unexpectedly")


def build_output(
    envelope: InputEnvelope,
    input_sha256: str,
    result: ValidationResult,
    started_at: datetime,
    finished_at: datetime,
    max_messages: int,
    artifacts: list[Artifact] | None = None,
) -> OutputEnvelope:
    messages = result.messages
    if result.runtime_error is not None:
        code = TIMEOUT_CODE if result.timed_out else RUNTIME_CODE
        messages = [*messages, Message(severity=Severity.ERROR, code=code, text=result.runtime_error)]
    if len(messages) > max_messages:
        dropped = len(messages) - max_messages + 1
        messages = [
            *messages[: max_messages - 1],
            Message(
                severity=Severity.INFO,
                code="truncated",
                text=f"{dropped} more messages were dropped (limit VALIDIBOT_MAX_MESSAGES_PER_OUTPUT)",
            ),
        ]
    return OutputEnvelope(
        run_id=envelope.run_id,
        step_key=envelope.workflow.step_key,
        attempt_id=envelope.context.attempt_id,
        callback_id=envelope.context.callback_id,
        input_envelope_sha256=input_sha256,
        validator=envelope.validator,
        status=result.status,
        timing=Timing(started_at=started_at, finished_at=finished_at),
        messages=messages,
        metrics=result.metrics,
        artifacts=artifacts or [],
        outputs=result.outputs,
    )


def write_output(objects: ObjectStore, envelope: InputEnvelope, output: OutputEnvelope) -> bool:
    """Create output.json; False when it already exists (another run of this attempt finished first)."""
    try:
        objects.write_new(envelope.context.expected_output_uri, output.to_bytes(), "application/json")
    except ObjectConflict:
        return False
    return True


def report_failure(
    objects: ObjectStore,
    envelope: InputEnvelope,
    input_sha256: str,
    result: ValidationResult,
    started_at: datetime,
    settings: Settings,
) -> None:
    """Write the failed_runtime output a job could not write itself; a job's own output, if any, wins."""
    output = build_output(
        envelope, input_sha256, result, started_at, datetime.now(UTC), settings.max_messages_per_output
    )
    write_output(objects, envelope, output)


def execute(
    envelope: InputEnvelope, input_sha256: str, objects: ObjectStore, settings: Settings
) -> OutputEnvelope | None:
    """Validate, store artifacts, write output.json create-only. None when an output already existed."""
    if objects.stat(envelope.context.expected_output_uri) is not None:
        return None
    started_at = datetime.now(UTC)
    clock = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="validibot-") as scratch:
        result = _validate(envelope, objects, Path(scratch))
        validated = time.perf_counter()
        artifacts, notes = _store_artifacts(envelope, result.artifacts, objects, settings.max_artifact_bytes)
    log.info(
        "run %s attempt %s: validated in %.0f ms, %d artifacts stored in %.0f ms",
        envelope.run_id,
        envelope.context.attempt_id,
        (validated - clock) * 1000,
        len(artifacts),
        (time.perf_counter() - validated) * 1000,
    )
    result.messages.extend(notes)
    output = build_output(
        envelope, input_sha256, result, started_at, datetime.now(UTC), settings.max_messages_per_output, artifacts
    )
    return output if write_output(objects, envelope, output) else None
