"""Integration fixtures: the pipeline wired to the real emulators, and a downstream subscriber's subscription."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from google.cloud import pubsub_v1

from deploy.stack import LocalStack
from tests.support import Harness

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def harness(emulators: LocalStack) -> Harness:
    return Harness(emulators.services)


@pytest.fixture
def run_events(emulators: LocalStack) -> Iterator[tuple[pubsub_v1.SubscriberClient, str]]:
    """A fresh pull subscription on the lifecycle topic, as a downstream subscriber would make."""
    settings = emulators.settings
    subscriber = emulators.services.subscriber_client
    name = subscriber.subscription_path(settings.project, f"test-{uuid.uuid4().hex[:12]}")
    subscriber.create_subscription(
        request={
            "name": name,
            "topic": f"projects/{settings.project}/topics/{settings.run_events_topic}",
            "enable_message_ordering": True,
        }
    )
    yield subscriber, name
    subscriber.delete_subscription(subscription=name)
