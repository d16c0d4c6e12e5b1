"""Turn an input envelope into an output envelope. Shared by the inline launcher and the job entry point."""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from jobs.assertions import check_assertions
from jobs.bundles import BundleCaps, BundleRefused, matches_role, unpack_bundle
from jobs.registry import UnknownValidator, get_validator
from jobs.validators.base import (
    ArtifactFile,
    ConfigError,
    InputFile,
    OverBudget,
    ValidationContext,
    ValidationResult,
)
from jobs.validators.sandbox import scratch_directory
from schemas.enums import Severity
from schemas.envelopes import (
    RUNTIME_CODE,
    TIMEOUT_CODE,
    Artifact,
    Counts,
    FileRef,
    InputEnvelope,
    Message,
    OutputEnvelope,
    Timing,
)
from schemas.paths import ARTIFACTS_FOLDER, UnsafeName, check_filename
from schemas.settings import Settings
from schemas.signing import sign, signature_valid
from store.ports import (
    IntegrityError,
    ObjectConflict,
    ObjectMissing,
    ObjectStore,
    ObjectTooLarge,
    StoredObject,
    download_verified,
)

log = logging.getLogger(__name__)

MAX_INPUT_FILENAME = 255
# Kept free in output.json for the summary of messages not listed.
SUMMARY_ROOM_BYTES = 1024
# A create-only write that meets a forgery replaces it; a forger who keeps rewriting gets this many rounds.
WRITE_TRIES = 3


def _inside(root: Path, *parts: str) -> Path:
    path = root.joinpath(*parts).resolve()
    if not path.is_relative_to(root.resolve()):
        raise UnsafeName(f"{'/'.join(parts)!r} escapes the scratch directory")
    return path


def _fetch_inputs(envelope: InputEnvelope, objects: ObjectStore, scratch: Path) -> tuple[list[InputFile], str]:
    """The submission's files in scratch/inputs/, and the role of the one the validator checks.

    With the workflow's input roles (DESIGN §12), a .zip submission is unpacked into them (the zip itself stays, as
    role "bundle"), and any other submission must be a file of the first role; the first role is the primary one.
    BundleRefused says why a submission is neither.
    """
    files = []
    for index, ref in enumerate(envelope.input_files):
        # Each file gets its own folder so the validator sees the user's name (extensions matter to some
        # tools) while the path stays inside the scratch directory whatever that name is.
        dest = _inside(scratch, "inputs", str(index), check_filename(ref.name, MAX_INPUT_FILENAME))
        files.append(InputFile(ref=ref, path=download_verified(objects, ref, dest)))
    roles = {declared.role: declared.patterns for declared in envelope.input_roles}
    if not roles:
        return files, "primary"
    first_role = next(iter(roles))
    [submission] = [file for file in files if file.ref.role == "primary"]
    others = [file for file in files if file is not submission]
    if not submission.ref.name.lower().endswith(".zip"):
        if not matches_role(submission.ref.name, roles[first_role]):
            raise BundleRefused(
                "bundle_unexpected_file",
                f"the submission {submission.ref.name!r} is neither a .zip bundle nor a {first_role} file (a file "
                f"named like {' or '.join(roles[first_role])})",
            )
        as_first_role = submission.ref.model_copy(update={"role": first_role})
        return [*others, InputFile(ref=as_first_role, path=submission.path)], first_role
    # The runtime is handed no settings: a job's are its environment (its launcher sets them), as are a function's.
    caps = BundleCaps.from_settings(Settings())
    bundle = unpack_bundle(submission.path, roles, _inside(scratch, "inputs", "bundle"), caps)
    if bundle.ignored:
        log.info("run %s: %d bundle members match no role and were not unpacked", envelope.run_id, len(bundle.ignored))
    unpacked = [
        InputFile(
            ref=FileRef(
                name=member.path.name,
                role=role,
                uri=f"{submission.ref.uri}#{member.member}",
                size_bytes=member.size_bytes,
                sha256=member.sha256,
            ),
            path=member.path,
        )
        for role, member in bundle.roles.items()
    ]
    as_bundle = submission.ref.model_copy(update={"role": "bundle"})
    return [*others, InputFile(ref=as_bundle, path=submission.path), *unpacked], first_role


def _fetch_resources(envelope: InputEnvelope, objects: ObjectStore, scratch: Path) -> dict[str, Path]:
    """The step's resource files under scratch/resources/, each at its own relative path (so that a schema's
    relative `$ref` finds its sibling), every component of which is checked."""
    resources = {}
    for ref in envelope.resource_files:
        parts = [check_filename(part, MAX_INPUT_FILENAME) for part in ref.name.split("/")]
        resources[ref.name] = download_verified(objects, ref, _inside(scratch, "resources", *parts))
    return resources


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
        sha256 = _file_sha256(file.path)
        try:
            stored = objects.write_new_file(prefix + name, file.path, file.mime_type, sha256)
        except ObjectConflict:
            # A twin run of this attempt stored the same bytes; anything else in its place is not vouched for.
            found = objects.stat(prefix + name)
            if found is None or found.sha256 != sha256:
                notes.append(
                    Message(
                        severity=Severity.INFO,
                        code="artifact_conflict",
                        text=f"{name} was not stored: another object with other contents has its name",
                    )
                )
                continue
            stored = found
        artifacts.append(
            Artifact(
                name=name,
                uri=stored.uri,
                size_bytes=stored.size,
                sha256=stored.sha256,
                mime_type=file.mime_type,
                generation=stored.generation,
            )
        )
    return artifacts, notes


def _validate(
    envelope: InputEnvelope, objects: ObjectStore, scratch: Path, budget_seconds: float | None
) -> ValidationResult:
    """Run the envelope's validator; every failure becomes a result with a user-facing message."""
    started = time.monotonic()
    deadline = started + envelope.context.timeout_seconds
    try:
        validator = get_validator(envelope.validator.id)
        files, primary_role = _fetch_inputs(envelope, objects, scratch)
        resources = _fetch_resources(envelope, objects, scratch)
        workdir = _inside(scratch, "work")
        workdir.mkdir()
        return validator.validate(
            ValidationContext(
                files=files,
                inputs=envelope.inputs,
                workdir=workdir,
                timeout_seconds=envelope.context.timeout_seconds,
                deadline=deadline,
                budget_deadline=None if budget_seconds is None else started + budget_seconds,
                resources=resources,
                primary_role=primary_role,
            )
        )
    except OverBudget:
        raise
    except BundleRefused as exc:
        # The submission's fault, not the validator's: a finding, so the step fails validation.
        return ValidationResult(messages=[exc.as_message()], input_refused=True)
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


@dataclass(frozen=True)
class Assignment:
    """One attempt's work as a launcher hands it over: its envelope, the sha256 of the input.json bytes, and the key
    its verdict must be signed with (which never leaves the launch environment)."""

    envelope: InputEnvelope
    input_sha256: str
    signing_key: str = field(repr=False)


def _shortened(text: str, limit: int) -> str:
    # A lone surrogate (a JSON key "\ud800" quoted back) cannot be written as UTF-8: it is spelled out instead.
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    if len(text) <= limit:
        return text
    return f"{text[: max(limit - 40, 0)]}… ({len(text) - limit + 40} more characters)"[:limit]


def _bounded_message(message: Message, settings: Settings) -> Message:
    """A message within what one finding may store: long texts and names are shortened, never refused."""
    location = message.location
    if location is not None and location.path is not None:
        location = location.model_copy(update={"path": _shortened(location.path, settings.max_name_chars)})
    return message.model_copy(
        update={
            "code": _shortened(message.code, settings.max_name_chars),
            "text": _shortened(message.text, settings.max_message_chars),
            "location": location,
        }
    )


def _json_size(message: Message) -> int:
    # As written by to_bytes(): indented two levels deeper inside the messages list.
    dumped = message.model_dump_json(indent=2)
    return len(dumped.encode()) + 4 * dumped.count("\n") + 8


def _listed(messages: list[Message], room_bytes: int, max_messages: int) -> int:
    """How many of `messages`, in order, fit in `room_bytes` of output.json and the listing limit."""
    used = 0
    for count, message in enumerate(messages[:max_messages]):
        used += _json_size(message)
        if used > room_bytes:
            return count
    return min(len(messages), max_messages)


def build_output(
    assignment: Assignment,
    result: ValidationResult,
    *,
    started_at: datetime,
    settings: Settings,
    artifacts: list[Artifact] | None = None,
) -> OutputEnvelope:
    """The output envelope, within VALIDIBOT_MAX_ENVELOPE_BYTES and the listing limit whatever the validator
    reported: messages past what fits are summarised, and `counts` covers every one of them."""
    envelope = assignment.envelope
    reported = [_bounded_message(m, settings) for m in result.messages]
    if result.runtime_error is not None:
        code = TIMEOUT_CODE if result.timed_out else RUNTIME_CODE
        failure = Message(severity=Severity.ERROR, code=code, text=result.runtime_error)
        reported.append(_bounded_message(failure, settings))
    output = OutputEnvelope(
        run_id=envelope.run_id,
        step_key=envelope.workflow.step_key,
        attempt_id=envelope.context.attempt_id,
        callback_id=envelope.context.callback_id,
        input_envelope_sha256=assignment.input_sha256,
        validator=envelope.validator,
        status=result.status,
        timing=Timing(started_at=started_at, finished_at=datetime.now(UTC)),
        counts=Counts.of([m.severity for m in reported]),
        metrics=result.metrics,
        artifacts=artifacts or [],
        outputs=result.outputs,
    )
    room = settings.max_envelope_bytes - len(output.to_bytes()) - SUMMARY_ROOM_BYTES
    # The runtime's own failure message goes last and is always listed: it is the step's reason.
    own = reported[-1:] if result.runtime_error is not None else []
    validators = reported[: len(reported) - len(own)]
    room -= sum(_json_size(m) for m in own)
    listed = _listed(validators, room, settings.max_messages_per_output - len(own) - 1)
    if listed == len(validators):
        return output.model_copy(update={"messages": reported})
    omitted = Counts.of([m.severity for m in validators[listed:]])
    summary = Message(
        severity=Severity.INFO,
        code="truncated",
        text=f"{len(validators) - listed} more messages are not listed ({omitted.ERROR} errors, "
        f"{omitted.WARNING} warnings, {omitted.INFO} infos; VALIDIBOT_MAX_MESSAGES_PER_OUTPUT, "
        "VALIDIBOT_MAX_ENVELOPE_BYTES); the counts include them",
    )
    # The summary is a message of the output like any other: counted, so counts cover every listed message too.
    counts = output.message_counts().plus(Counts(INFO=1))
    return output.model_copy(update={"messages": [*validators[:listed], summary, *own], "counts": counts})


def _genuine(objects: ObjectStore, assignment: Assignment, found: StoredObject, max_bytes: int) -> bool:
    """Whether the output.json version found was signed with this attempt's key (not a forgery in its place)."""
    if found.signature is None or found.size > max_bytes:
        return False
    try:
        data = objects.read_bytes(found.uri, found.generation, max_bytes)
    except (ObjectMissing, ObjectTooLarge):
        return False
    return signature_valid(assignment.signing_key, hashlib.sha256(data).hexdigest(), found.signature)


def output_taken(objects: ObjectStore, assignment: Assignment, settings: Settings) -> bool:
    """Whether this attempt's verdict is already written (a twin run of the attempt finished first)."""
    found = objects.stat(assignment.envelope.context.expected_output_uri)
    return found is not None and _genuine(objects, assignment, found, settings.max_envelope_bytes)


def write_output(objects: ObjectStore, assignment: Assignment, data: bytes, settings: Settings) -> StoredObject | None:
    """Write an output envelope's bytes, signed, as output.json; None when a genuine one exists already.

    Create-only, except that a version in its place which does not carry this attempt's signature is a forgery:
    it is replaced, conditionally on being exactly that version, so the real verdict is not locked out by it.
    """
    uri = assignment.envelope.context.expected_output_uri
    signature = sign(assignment.signing_key, data)
    for _ in range(WRITE_TRIES):
        try:
            return objects.write_new(uri, data, "application/json", signature)
        except ObjectConflict:
            pass
        found = objects.stat(uri)
        if found is None:
            continue
        if _genuine(objects, assignment, found, settings.max_envelope_bytes):
            return None
        log.warning("%s (generation %s) is not signed for its attempt: replacing it", uri, found.generation)
        try:
            return objects.replace_version(
                uri, data, "application/json", generation=found.generation, signature=signature
            )
        except ObjectConflict:
            continue
    raise ObjectConflict(f"{uri} kept changing while this attempt's output was written")


def report_failure(
    objects: ObjectStore, assignment: Assignment, result: ValidationResult, *, started_at: datetime, settings: Settings
) -> None:
    """Write the failed_runtime output a job could not write itself; a job's own output, if any, wins."""
    output = build_output(assignment, result, started_at=started_at, settings=settings)
    write_output(objects, assignment, output.to_bytes(), settings)


@dataclass(frozen=True)
class Written:
    output: OutputEnvelope
    stored: StoredObject
    data: bytes  # exactly as stored, so the chain can ingest it without reading it back


def execute(
    assignment: Assignment, objects: ObjectStore, settings: Settings, *, budget_seconds: float | None = None
) -> Written | None:
    """Validate, store artifacts, write the signed output.json. None when a genuine output already existed.

    With a budget (inline runs), a validator still busy when it is spent raises OverBudget and writes nothing.
    """
    envelope = assignment.envelope
    if output_taken(objects, assignment, settings):
        return None
    started_at = datetime.now(UTC)
    clock = time.perf_counter()
    with scratch_directory() as scratch:
        result = _validate(envelope, objects, Path(scratch), budget_seconds)
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
    # Assertions speak of results: a run error or a refused submission has none to speak of.
    if result.runtime_error is None and not result.input_refused:
        result.messages.extend(
            check_assertions(
                envelope.assertions,
                result,
                prior_steps=envelope.prior_steps,
                submission=envelope.input_files[0] if envelope.input_files else None,
            )
        )
    output = build_output(assignment, result, started_at=started_at, settings=settings, artifacts=artifacts)
    data = output.to_bytes()
    stored = write_output(objects, assignment, data, settings)
    return Written(output, stored, data) if stored else None
