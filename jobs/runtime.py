"""Turn an input envelope into an output envelope. Shared by the inline launcher and the job entry point."""

from __future__ import annotations

import logging
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from jobs.registry import UnknownValidator, get_validator
from jobs.validators.base import ConfigError, InputFile, ValidationContext, ValidationResult
from schemas.enums import Severity
from schemas.envelopes import InputEnvelope, Message, OutputEnvelope, Timing
from schemas.paths import UnsafeName, check_filename
from store.objects import IntegrityError, ObjectConflict, ObjectMissing, ObjectStore

log = logging.getLogger(__name__)

MAX_INPUT_FILENAME = 255


def _fetch_inputs(envelope: InputEnvelope, objects: ObjectStore, scratch: Path) -> list[InputFile]:
    files = []
    for index, ref in enumerate(envelope.input_files):
        # Each file gets its own folder so the validator sees the user's name (extensions matter to some
        # tools) while the path stays inside the scratch directory whatever that name is.
        dest = (scratch / "inputs" / str(index) / check_filename(ref.name, MAX_INPUT_FILENAME)).resolve()
        if not dest.is_relative_to(scratch.resolve()):
            raise UnsafeName(f"input file name {ref.name!r} escapes the scratch directory")
        files.append(InputFile(ref=ref, path=objects.download_verified(ref, dest)))
    return files


def validate_envelope(envelope: InputEnvelope, objects: ObjectStore) -> ValidationResult:
    """Run the envelope's validator; every failure becomes a result with a user-facing message."""
    try:
        validator = get_validator(envelope.validator.id)
        with tempfile.TemporaryDirectory(prefix="validibot-") as scratch_dir:
            scratch = Path(scratch_dir)
            files = _fetch_inputs(envelope, objects, scratch)
            return validator.validate(ValidationContext(files=files, inputs=envelope.inputs, workdir=scratch))
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
) -> OutputEnvelope:
    messages = result.messages
    if result.runtime_error is not None:
        messages = [*messages, Message(severity=Severity.ERROR, code="runtime", text=result.runtime_error)]
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
        outputs=result.outputs,
    )


def execute(envelope: InputEnvelope, input_sha256: str, objects: ObjectStore, max_messages: int) -> bool:
    """Validate and write output.json create-only. False when an output already exists (nothing computed)."""
    output_uri = envelope.context.expected_output_uri
    if objects.stat(output_uri) is not None:
        return False
    started_at = datetime.now(UTC)
    result = validate_envelope(envelope, objects)
    output = build_output(envelope, input_sha256, result, started_at, datetime.now(UTC), max_messages)
    try:
        objects.write_new(output_uri, output.to_bytes(), "application/json")
    except ObjectConflict:
        return False
    return True
