"""Publish lifecycle CloudEvents on Pub/Sub in the binary content mode (DESIGN §8)."""

from __future__ import annotations

from collections.abc import Iterable

from google.cloud import pubsub_v1

from events.decode import TICK_ATTRIBUTE, TICK_VALUE
from schemas.lifecycle import EVENT_SOURCE, LifecycleEvent

PUBLISH_TIMEOUT_SECONDS = 30.0


def message_attributes(event: LifecycleEvent) -> dict[str, str]:
    """The Pub/Sub binary binding: CloudEvent attributes become `ce-` message attributes."""
    data = event.data
    return {
        "ce-specversion": "1.0",
        "ce-id": event.id,
        "ce-source": EVENT_SOURCE,
        "ce-type": str(event.type),
        "ce-subject": event.subject,
        "ce-time": event.time.isoformat().replace("+00:00", "Z"),
        "content-type": "application/json",
        "ce-org": data.org,
        "ce-workflow": data.workflow,
        "ce-runstatus": str(data.status),
    }


class PubSubPublisher:
    """Pub/Sub adapter of the Publisher port; its client must have message ordering enabled."""

    def __init__(self, client: pubsub_v1.PublisherClient, project: str, topic: str) -> None:
        self._client = client
        self._topic = client.topic_path(project, topic)

    def publish(self, events: Iterable[LifecycleEvent]) -> None:
        futures = [
            (
                event,
                self._client.publish(
                    self._topic,
                    event.data.model_dump_json().encode(),
                    ordering_key=event.data.run_id,
                    **message_attributes(event),
                ),
            )
            for event in events
        ]
        for event, future in futures:
            try:
                future.result(timeout=PUBLISH_TIMEOUT_SECONDS)
            except Exception:
                # A failed publish pauses its ordering key; resume it so the redelivery can publish again.
                self._client.resume_publish(self._topic, event.data.run_id)
                raise


def publish_tick(client: pubsub_v1.PublisherClient, project: str, topic: str) -> None:
    """One maintenance tick (DESIGN §13): what Cloud Scheduler publishes in production, every minute."""
    client.publish(client.topic_path(project, topic), b"", **{TICK_ATTRIBUTE: TICK_VALUE}).result(
        timeout=PUBLISH_TIMEOUT_SECONDS
    )
