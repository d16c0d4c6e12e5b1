"""Publish lifecycle CloudEvents on Pub/Sub in the binary content mode (DESIGN §8)."""

from __future__ import annotations

from collections.abc import Iterable

from google.cloud import pubsub_v1
from google.cloud.pubsub_v1.types import BatchSettings, PublisherOptions

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


class LifecyclePublisher:
    def __init__(self, project: str, topic: str, client: pubsub_v1.PublisherClient | None = None) -> None:
        self._client = client or pubsub_v1.PublisherClient(
            # A lifecycle event is one small message: send it at once rather than wait to fill a batch.
            batch_settings=BatchSettings(max_latency=0.001),
            publisher_options=PublisherOptions(enable_message_ordering=True),
        )
        self._topic = self._client.topic_path(project, topic)

    def publish(self, events: Iterable[LifecycleEvent]) -> None:
        """Publish and wait for every event, so a handler acknowledges only what is really sent."""
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
