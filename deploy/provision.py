"""Create the bucket, topics and subscriptions of DESIGN §10, and seed the demo organization. Idempotent."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from importlib import resources

from google.api_core import exceptions as gexc
from google.protobuf import duration_pb2

from bootstrap import Services
from jobs.registry import get_validator
from jobs.validators.base import parse_config
from schemas.changes import Write, org_path, workflow_path
from schemas.documents import OrgDoc, WorkflowDoc
from schemas.settings import Settings
from store.ports import RunStore

DEMO_ORG = "demo"
# Redelivery is the retry for transient faults (an emulator or API briefly away): a handler that raised is tried
# again after a backoff, then dead-lettered. A full launcher does not raise: its attempt waits queued for the tick.
MAX_DELIVERY_ATTEMPTS = 30
ACK_DEADLINE_SECONDS = 60
# A tick that failed is soon followed by the next one: a few tries, then the dead letter keeps it for operators.
TICK_DELIVERY_ATTEMPTS = 5


def push_endpoint(functions_url: str, settings: Settings, topic: str | None = None) -> str:
    # functions-framework reads the topic from the path when it turns a raw push into a CloudEvent.
    return f"{functions_url}/projects/{settings.project}/topics/{topic or settings.notifications_topic}"


def provision(services: Services, functions_url: str | None) -> None:
    """Topics, buckets and, given the functions' URL, the push subscriptions that feed them."""
    settings = services.settings
    publisher = services.publisher_client
    subscriber = services.subscriber_client
    topics = {
        name: publisher.topic_path(settings.project, name)
        for name in (
            settings.notifications_topic,
            settings.run_events_topic,
            settings.dead_letter_topic,
            settings.maintenance_topic,
        )
    }
    for topic in topics.values():
        _ignore_exists(lambda topic=topic: publisher.create_topic(name=topic))
    dead_letter = topics[settings.dead_letter_topic]
    _ignore_exists(
        lambda: subscriber.create_subscription(
            name=subscriber.subscription_path(settings.project, settings.dead_letter_topic), topic=dead_letter
        )
    )
    if functions_url is not None:
        # The functions get the maintenance tick like any other event (Cloud Scheduler → Pub/Sub in production).
        for subscription, topic, attempts in (
            (settings.pipeline_subscription, settings.notifications_topic, MAX_DELIVERY_ATTEMPTS),
            (settings.maintenance_subscription, settings.maintenance_topic, TICK_DELIVERY_ATTEMPTS),
        ):
            request = {
                "name": subscriber.subscription_path(settings.project, subscription),
                "topic": topics[topic],
                "push_config": {"push_endpoint": push_endpoint(functions_url, settings, topic)},
                "ack_deadline_seconds": ACK_DEADLINE_SECONDS,
                "dead_letter_policy": {"dead_letter_topic": dead_letter, "max_delivery_attempts": attempts},
                "retry_policy": {
                    "minimum_backoff": duration_pb2.Duration(seconds=1),
                    "maximum_backoff": duration_pb2.Duration(seconds=30),
                },
            }
            _ignore_exists(lambda request=request: subscriber.create_subscription(request=request))
    for bucket in (settings.bucket, settings.inbox_bucket):
        _ignore_exists(lambda bucket=bucket: services.storage_client.create_bucket(bucket))


def _ignore_exists(create: Callable[[], object]) -> None:
    try:
        create()
    except gexc.AlreadyExists:
        pass
    except gexc.Conflict:  # Cloud Storage says 409 Conflict for an existing bucket
        pass


def demo_workflows() -> list[WorkflowDoc]:
    seed = resources.files("deploy") / "seed"
    workflows = []
    for entry in sorted(seed.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".workflow.json"):
            workflow = WorkflowDoc.model_validate(json.loads(entry.read_text()))
            for step in workflow.steps:
                parse_config(get_validator(step.validator), step.config)
            workflows.append(workflow)
    return workflows


def seed_demo(store: RunStore) -> list[WorkflowDoc]:
    workflows = demo_workflows()
    store.commit(
        [
            Write(org_path(DEMO_ORG), OrgDoc(name="Demo organization", created_at=datetime.now(UTC)), "upsert"),
            *(Write(workflow_path(w.org, w.slug), w, "upsert") for w in workflows),
        ]
    )
    return workflows
