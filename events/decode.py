"""Turn either delivery shape of an object-finalize event (DESIGN §5) into one ObjectFinalized."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any

from cloudevents.http import CloudEvent
from pydantic import ValidationError

from schemas.objects import ObjectFinalized

STORAGE_FINALIZED = "google.cloud.storage.object.v1.finalized"
PUBSUB_PUBLISHED = "google.cloud.pubsub.topic.v1.messagePublished"


# The maintenance tick (DESIGN §13) is a Pub/Sub message on the maintenance topic carrying this attribute, whoever
# publishes it (Cloud Scheduler in production, `validibot up` locally).
TICK_ATTRIBUTE = "validibot-event"
TICK_VALUE = "maintenance-tick"


class UndecodableEvent(ValueError):
    """An event no redelivery can make sense of: acknowledged and logged, never retried."""


def decode_finalize(event: CloudEvent) -> ObjectFinalized | None:
    """The finalized object, or None for an event that is not an object finalize (ignored)."""
    event_type = event["type"]
    if event_type == STORAGE_FINALIZED:
        return _from_resource(_as_mapping(event.data))
    if event_type == PUBSUB_PUBLISHED:
        return _from_notification(_as_mapping(event.data))
    return None


def is_maintenance_tick(event: CloudEvent) -> bool:
    if event["type"] != PUBSUB_PUBLISHED:
        return False
    data = event.data
    message = data.get("message") if isinstance(data, Mapping) else None
    attributes = message.get("attributes") if isinstance(message, Mapping) else None
    return isinstance(attributes, Mapping) and attributes.get(TICK_ATTRIBUTE) == TICK_VALUE


def _from_notification(data: Mapping[str, Any]) -> ObjectFinalized | None:
    message = data.get("message")
    if not isinstance(message, Mapping):
        raise UndecodableEvent("Pub/Sub event without a message")
    attributes = message.get("attributes") or {}
    if attributes.get("eventType") != "OBJECT_FINALIZE":
        return None
    if attributes.get("payloadFormat", "JSON_API_V1") != "JSON_API_V1" or not message.get("data"):
        raise UndecodableEvent("storage notification without a JSON_API_V1 payload; configure the notification")
    try:
        resource = json.loads(base64.b64decode(message["data"], validate=True))
    except (binascii.Error, ValueError) as exc:
        raise UndecodableEvent(f"storage notification payload is not base64 JSON: {exc}") from exc
    return _from_resource(_as_mapping(resource))


def _from_resource(resource: Mapping[str, Any]) -> ObjectFinalized:
    try:
        return ObjectFinalized(
            bucket=resource["bucket"],
            name=resource["name"],
            generation=resource["generation"],
            size=resource.get("size", 0),
            content_type=resource.get("contentType"),
            md5_hash=resource.get("md5Hash"),
            crc32c=resource.get("crc32c"),
            time_created=resource.get("timeCreated"),
            metadata=resource.get("metadata") or {},
        )
    except (KeyError, ValidationError) as exc:
        raise UndecodableEvent(f"object resource is missing or has malformed fields: {exc}") from exc


def _as_mapping(data: Any) -> Mapping[str, Any]:
    if isinstance(data, bytes | str):
        try:
            data = json.loads(data)
        except ValueError as exc:
            raise UndecodableEvent(f"event data is not JSON: {exc}") from exc
    if not isinstance(data, Mapping):
        raise UndecodableEvent(f"event data is {type(data).__name__}, not a JSON object")
    return data
