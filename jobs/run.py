"""The validator job: `python -m jobs.run`, as a Cloud Run Job or as a local process (DESIGN §7, §9).

Environment:
  VALIDIBOT_INPUT_URI    where input.json is (gs://bucket/... or file:///path)
  VALIDIBOT_OUTPUT_URI   optional; when set it must equal the envelope's context.expected_output_uri
  VALIDIBOT_RUN_ID       optional; when set it must equal the envelope's run_id
  VALIDIBOT_SIGNING_KEY  the attempt's output-signing key (DESIGN §6); read once, then removed from the
                         environment so that nothing the job starts can see it

Exit status: 0 a verdict was written (or output.json already existed, so nothing was computed); 1 a failed_runtime
output was written; 2 the job was started wrongly (no or unreadable envelope, mismatched URIs, no signing key) and
wrote nothing.
"""

from __future__ import annotations

import logging
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote, urlparse

from pydantic import ValidationError

from bootstrap import Services
from bootstrap.logs import configure_logging
from jobs.runtime import Assignment, execute, report_failure
from jobs.validators.base import ValidationResult
from schemas.enums import EnvelopeStatus
from schemas.envelopes import InputEnvelope, sha256_hex
from schemas.log_labels import log_labels
from schemas.settings import Settings
from schemas.signing import SIGNING_KEY_ENV
from store.ports import ObjectMissing, ObjectStore, ObjectTooLarge

log = logging.getLogger("validibot.job")

EXIT_VERDICT = 0
EXIT_RUNTIME_FAILURE = 1
EXIT_BAD_START = 2


class BadStart(Exception):
    """The job cannot know which attempt it serves, so it cannot even report a failure."""


def read_envelope(uri: str, objects: ObjectStore, max_bytes: int) -> bytes:
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        path = Path(unquote(parsed.path))
        if not path.is_file():
            raise BadStart(f"{uri} is not a file")
        if path.stat().st_size > max_bytes:
            raise BadStart(f"{uri} is over {max_bytes} bytes (VALIDIBOT_MAX_ENVELOPE_BYTES)")
        return path.read_bytes()
    if parsed.scheme == "gs":
        try:
            return objects.read_bytes(uri, None, max_bytes)
        except ObjectMissing as exc:
            raise BadStart(f"{uri} does not exist") from exc
        except ObjectTooLarge as exc:
            raise BadStart(f"{uri} is over {max_bytes} bytes (VALIDIBOT_MAX_ENVELOPE_BYTES)") from exc
    raise BadStart(f"VALIDIBOT_INPUT_URI must be gs:// or file://, not {uri!r}")


def parse_envelope(data: bytes, environ: dict[str, str]) -> InputEnvelope:
    try:
        envelope = InputEnvelope.model_validate_json(data)
    except ValidationError as exc:
        raise BadStart(f"not a valid input envelope: {exc}") from exc
    output_uri = environ.get("VALIDIBOT_OUTPUT_URI")
    if output_uri and output_uri != envelope.context.expected_output_uri:
        raise BadStart(f"VALIDIBOT_OUTPUT_URI {output_uri} is not this envelope's expected_output_uri")
    run_id = environ.get("VALIDIBOT_RUN_ID")
    if run_id and run_id != envelope.run_id:
        raise BadStart(f"VALIDIBOT_RUN_ID {run_id} is not this envelope's run_id")
    return envelope


def run(environ: dict[str, str], settings: Settings, objects: ObjectStore) -> int:
    input_uri = environ.get("VALIDIBOT_INPUT_URI")
    signing_key = environ.get(SIGNING_KEY_ENV)
    if not input_uri or not signing_key:
        log.error("VALIDIBOT_INPUT_URI and %s must both be set by the launcher", SIGNING_KEY_ENV)
        return EXIT_BAD_START
    try:
        data = read_envelope(input_uri, objects, settings.max_envelope_bytes)
        envelope = parse_envelope(data, environ)
    except BadStart as exc:
        log.error("cannot start: %s", exc)
        return EXIT_BAD_START
    with log_labels(run_id=envelope.run_id, org=envelope.org.id, attempt_id=envelope.context.attempt_id):
        return _run_attempt(Assignment(envelope, sha256_hex(data), signing_key), objects, settings)


def _run_attempt(assignment: Assignment, objects: ObjectStore, settings: Settings) -> int:
    envelope = assignment.envelope
    started_at = datetime.now(UTC)
    attempt = f"run {envelope.run_id} attempt {envelope.context.attempt_id}"
    try:
        written = execute(assignment, objects, settings)
    except Exception as exc:
        log.exception("%s: the job crashed", attempt)
        result = ValidationResult(
            runtime_error=f"the validation job stopped unexpectedly ({type(exc).__name__}); operators have the logs"
        )
        report_failure(objects, assignment, result, started_at=started_at, settings=settings)
        return EXIT_RUNTIME_FAILURE
    if written is None:
        log.info("%s: output.json already exists; nothing computed", attempt)
        return EXIT_VERDICT
    output = written.output
    log.info("%s: %s with %d messages", attempt, output.status, len(output.messages))
    return EXIT_RUNTIME_FAILURE if output.status == EnvelopeStatus.FAILED_RUNTIME else EXIT_VERDICT


def main() -> int:
    environ = dict(os.environ)
    os.environ.pop(SIGNING_KEY_ENV, None)
    services = Services.from_environment()
    configure_logging(services.settings, "job")
    return run(environ, services.settings, services.objects)


if __name__ == "__main__":
    sys.exit(main())
