"""The runtime's output: bounded whatever a validator reports, signed, and never locked out by a forgery."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

from jobs.runtime import Assignment, build_output, output_taken, write_output
from jobs.validators.base import ValidationResult
from schemas.envelopes import Counts, InputContext, InputEnvelope, Message, OrgRef, ValidatorRef, WorkflowRef
from schemas.settings import Settings
from schemas.signing import sign, signature_valid
from tests.fakes import FakeObjectStore

OUTPUT_URI = "gs://b/runs/demo/0123456789abcdef01234567/steps/01-s/01-1/output.json"
KEY = "ab" * 32
SETTINGS = Settings(signing_secret="s")
ASSIGNMENT = Assignment(
    InputEnvelope(
        run_id="0123456789abcdef01234567",
        validator=ValidatorRef(id="json-schema", type="json-schema", version="1"),
        org=OrgRef(id="demo", name="Demo"),
        workflow=WorkflowRef(id="demo.wf", step_key="s", step_name="S"),
        input_files=[],
        context=InputContext(
            attempt_id="01-1",
            callback_id="c" * 43,
            expected_output_uri=OUTPUT_URI,
            execution_bundle_uri=OUTPUT_URI.removesuffix("output.json"),
            timeout_seconds=5,
        ),
    ),
    "f" * 64,
    KEY,
)


def errors(n: int, text: str = "e") -> list[Message]:
    return [Message(severity="ERROR", code="x", text=f"{text}{i}") for i in range(n)]


def output_for(result: ValidationResult, **settings: int):
    return build_output(ASSIGNMENT, result, started_at=datetime.now(UTC), settings=SETTINGS.model_copy(update=settings))


def test_messages_past_the_listing_limit_are_summarised_and_still_counted() -> None:
    output = output_for(ValidationResult(messages=errors(10)), max_messages_per_output=5)

    assert [m.text for m in output.messages[:4]] == ["e0", "e1", "e2", "e3"]
    assert output.messages[4].code == "truncated"
    assert output.messages[4].text.startswith("6 more messages are not listed (6 errors, 0 warnings, 0 infos;")
    assert output.counts == Counts(ERROR=10, INFO=1)


def test_ten_thousand_long_messages_fit_the_envelope_limit_with_every_one_counted() -> None:
    output = output_for(ValidationResult(messages=errors(10_000, "x" * 5000)))

    size = len(output.to_bytes())
    assert size <= SETTINGS.max_envelope_bytes
    assert all(len(m.text) <= SETTINGS.max_message_chars for m in output.messages)
    assert output.messages[0].text.endswith("more characters)")
    assert output.counts == Counts(ERROR=10_000, INFO=1)
    assert output.messages[-1].code == "truncated"
    assert 100 < len(output.messages) < 10_000


def test_the_runtime_failure_stays_listed_last_when_messages_are_cut() -> None:
    output = output_for(ValidationResult(messages=errors(50), runtime_error="engine died"), max_messages_per_output=10)

    assert [m.code for m in output.messages[-2:]] == ["truncated", "runtime"]
    assert output.messages[-1].text == "engine died"
    assert output.counts == Counts(ERROR=51, INFO=1)


def test_a_written_output_carries_its_attempts_signature() -> None:
    objects = FakeObjectStore()
    output = output_for(ValidationResult())

    assert write_output(objects, ASSIGNMENT, output.to_bytes(), SETTINGS)

    stored = objects.stat(OUTPUT_URI)
    data = objects.read_bytes(OUTPUT_URI, stored.generation, 1 << 20)
    assert data == output.to_bytes()
    assert signature_valid(KEY, hashlib.sha256(data).hexdigest(), stored.signature)
    assert output_taken(objects, ASSIGNMENT, SETTINGS)


def test_a_forgery_in_the_outputs_place_is_replaced_by_the_real_verdict() -> None:
    objects = FakeObjectStore()
    forged = objects.upload(OUTPUT_URI, b'{"status": "success"}', signature="0" * 64)
    output = output_for(ValidationResult(messages=errors(1)))

    assert not output_taken(objects, ASSIGNMENT, SETTINGS)
    assert write_output(objects, ASSIGNMENT, output.to_bytes(), SETTINGS)

    live = objects.stat(OUTPUT_URI)
    assert live.generation != forged.generation
    assert objects.read_bytes(OUTPUT_URI, live.generation, 1 << 20) == output.to_bytes()


def test_a_genuine_output_already_written_is_never_replaced() -> None:
    objects = FakeObjectStore()
    first = output_for(ValidationResult()).to_bytes()
    objects.write_new(OUTPUT_URI, first, "application/json", sign(KEY, first))

    assert not write_output(objects, ASSIGNMENT, output_for(ValidationResult(messages=errors(1))).to_bytes(), SETTINGS)

    assert objects.read_bytes(OUTPUT_URI, None, 1 << 20) == first
    assert objects.generations_written(OUTPUT_URI) == 1
