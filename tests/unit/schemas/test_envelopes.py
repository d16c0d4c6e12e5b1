"""Envelope serialization: input.json bytes are canonical, so an intake replayed from Firestore writes what it
scheduled."""

from __future__ import annotations

from schemas.envelopes import InputContext, InputEnvelope, OrgRef, ValidatorRef, WorkflowRef


def envelope(inputs: dict) -> InputEnvelope:
    return InputEnvelope(
        run_id="0123456789abcdef01234567",
        validator=ValidatorRef(id="json-schema", type="json-schema", version="1"),
        org=OrgRef(id="demo", name="Démo"),
        workflow=WorkflowRef(id="demo.wf", step_key="s", step_name="S"),
        input_files=[],
        inputs=inputs,
        context=InputContext(
            attempt_id="01-1",
            callback_id="c" * 43,
            expected_output_uri="gs://b/o/output.json",
            execution_bundle_uri="gs://b/o/",
            timeout_seconds=5,
        ),
    )


def test_input_bytes_do_not_depend_on_the_order_a_config_was_read_back_in() -> None:
    written = envelope({"schema": {"type": "object", "required": ["a"], "properties": {"b": {}, "a": {}}}})
    read_back = envelope({"schema": {"properties": {"a": {}, "b": {}}, "required": ["a"], "type": "object"}})

    assert written.to_bytes() == read_back.to_bytes()
    assert InputEnvelope.model_validate_json(written.to_bytes()) == written
