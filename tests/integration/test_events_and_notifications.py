"""Lifecycle CloudEvents reach a real subscriber; real storage notifications decode to ObjectFinalized."""

from __future__ import annotations

import base64
import json
import time
import uuid

import pytest
from cloudevents.http import CloudEvent
from google.cloud import pubsub_v1

from deploy.stack import LocalStack
from events.decode import PUBSUB_PUBLISHED, decode_finalize
from functions.stage import Handled, Outcome
from schemas.lifecycle import EVENT_SOURCE
from tests.support import INVALID, Harness

pytestmark = pytest.mark.integration


def pull_until(subscriber: pubsub_v1.SubscriberClient, subscription: str, wanted: int, timeout: float = 20.0):
    received = []
    deadline = time.monotonic() + timeout
    while len(received) < wanted and time.monotonic() < deadline:
        response = subscriber.pull(subscription=subscription, max_messages=100, timeout=5)
        if response.received_messages:
            subscriber.acknowledge(subscription=subscription, ack_ids=[m.ack_id for m in response.received_messages])
            received.extend(m.message for m in response.received_messages)
    return received


def test_run_created_and_completed_events_carry_the_design_attributes(harness: Harness, run_events) -> None:
    subscriber, subscription = run_events
    run_id, _run = harness.run_through(INVALID)

    messages = [
        m for m in pull_until(subscriber, subscription, wanted=4) if m.attributes["ce-subject"].endswith(run_id)
    ]

    by_type = {m.attributes["ce-type"]: m for m in messages}
    assert list(by_type) == [
        "org.validibot.run.v1.created",
        "org.validibot.step.v1.started",
        "org.validibot.step.v1.completed",
        "org.validibot.run.v1.completed",
    ]
    created, completed = by_type["org.validibot.run.v1.created"], by_type["org.validibot.run.v1.completed"]
    for message, status in ((created, "PENDING"), (completed, "FAILED")):
        attributes = dict(message.attributes)
        assert attributes.pop("ce-time").endswith("Z")
        assert attributes == {
            "ce-specversion": "1.0",
            "ce-id": f"{run_id}:{message.attributes['ce-type']}",
            "ce-source": EVENT_SOURCE,
            "ce-type": message.attributes["ce-type"],
            "ce-subject": f"runs/{run_id}",
            "content-type": "application/json",
            "ce-org": "demo",
            "ce-workflow": "json-basic",
            "ce-runstatus": status,
        }
        assert message.ordering_key == run_id
    body = json.loads(completed.data)
    assert body["run_id"] == run_id
    assert body["status"] == "FAILED"
    assert body["error_category"] == "VALIDATION_FAILED"
    assert body["counts"] == {"ERROR": 4, "WARNING": 0, "INFO": 0}
    assert by_type["org.validibot.step.v1.completed"].attributes["ce-id"] == (
        f"{run_id}:org.validibot.step.v1.completed:01"
    )


def test_storage_notification_from_the_emulator_decodes_to_the_uploaded_object(
    harness: Harness, emulators: LocalStack
) -> None:
    settings = emulators.settings
    subscriber = emulators.services.subscriber_client
    subscription = subscriber.subscription_path(settings.project, f"notes-{uuid.uuid4().hex[:10]}")
    subscriber.create_subscription(
        name=subscription, topic=f"projects/{settings.project}/topics/{settings.notifications_topic}"
    )
    try:
        name = f"unrouted/{uuid.uuid4().hex}.json"
        blob = harness.bucket.blob(name)
        blob.metadata = {"validibot-signature": "f" * 64}
        blob.upload_from_string(b'{"a": 1}', content_type="application/json")

        matching = []
        deadline = time.monotonic() + 20
        while not matching and time.monotonic() < deadline:
            matching = [m for m in pull_until(subscriber, subscription, 1, 5) if m.attributes["objectId"] == name]
        [message] = matching
    finally:
        subscriber.delete_subscription(subscription=subscription)

    # Exactly what functions-framework hands the function for a push delivery.
    event = CloudEvent(
        {"type": PUBSUB_PUBLISHED, "source": f"//pubsub.googleapis.com/projects/{settings.project}/topics/x"},
        {
            "message": {
                "data": base64.b64encode(message.data).decode(),
                "attributes": dict(message.attributes),
                "messageId": message.message_id,
            }
        },
    )
    decoded = decode_finalize(event)

    assert decoded is not None
    assert (decoded.bucket, decoded.name, decoded.generation) == (settings.bucket, name, blob.generation)
    assert decoded.size == 8
    assert decoded.content_type == "application/json"
    # INGEST reads an output's signature from here instead of looking the version up.
    assert decoded.metadata["validibot-signature"] == "f" * 64
    assert harness.pipeline.handle(decoded) == Handled(Outcome.IGNORED)
