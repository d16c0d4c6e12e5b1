from __future__ import annotations

import base64
import json

import pytest
from cloudevents.http import CloudEvent

from events.decode import PUBSUB_PUBLISHED, STORAGE_FINALIZED, UndecodableEvent, decode_finalize

RESOURCE = {
    "kind": "storage#object",
    "bucket": "validibot-local",
    "name": "inbox/demo/json-basic/a.json",
    "generation": "1795381860462865",
    "metageneration": "1",
    "size": "7",
    "contentType": "application/json",
    "md5Hash": "u2y1xo30ZSlByvZSo2by2A==",
    "crc32c": "z/fVag==",
    "timeCreated": "2026-11-22T21:11:00.462833Z",
}


def direct(data: object) -> CloudEvent:
    return CloudEvent(
        {
            "type": STORAGE_FINALIZED,
            "source": "//storage.googleapis.com/projects/_/buckets/validibot-local",
            "subject": "objects/inbox/demo/json-basic/a.json",
        },
        data,
    )


def pushed(attributes: dict[str, str], payload: object) -> CloudEvent:
    message = {"attributes": attributes, "messageId": "1"}
    if payload is not None:
        message["data"] = base64.b64encode(json.dumps(payload).encode()).decode()
    return CloudEvent(
        {"type": PUBSUB_PUBLISHED, "source": "//pubsub.googleapis.com/projects/p/topics/t"}, {"message": message}
    )


NOTIFICATION = {
    "eventType": "OBJECT_FINALIZE",
    "payloadFormat": "JSON_API_V1",
    "bucketId": "validibot-local",
    "objectId": "inbox/demo/json-basic/a.json",
    "objectGeneration": "1795381860462865",
}


def test_both_delivery_shapes_decode_to_the_same_object() -> None:
    from_eventarc = decode_finalize(direct(RESOURCE))
    from_pubsub = decode_finalize(pushed(NOTIFICATION, RESOURCE))

    assert from_eventarc == from_pubsub
    assert from_eventarc.generation == 1795381860462865  # int64 sent as a string
    assert from_eventarc.size == 7
    assert from_eventarc.content_type == "application/json"
    assert from_eventarc.time_created.year == 2026


def test_direct_event_data_may_arrive_as_bytes() -> None:
    assert decode_finalize(direct(json.dumps(RESOURCE).encode())).name == RESOURCE["name"]


@pytest.mark.parametrize("event_type", ["OBJECT_DELETE", "OBJECT_METADATA_UPDATE", "OBJECT_ARCHIVE"])
def test_other_storage_notifications_are_not_finalizes(event_type: str) -> None:
    assert decode_finalize(pushed({**NOTIFICATION, "eventType": event_type}, RESOURCE)) is None


def test_unrelated_event_types_are_ignored() -> None:
    assert decode_finalize(CloudEvent({"type": "com.example.other", "source": "x"}, {})) is None


@pytest.mark.parametrize(
    "event",
    [
        direct({"bucket": "b"}),
        direct(b"not json"),
        direct([1, 2]),
        direct({**RESOURCE, "generation": "not-a-number"}),
        pushed({**NOTIFICATION, "payloadFormat": "NONE"}, None),
        CloudEvent({"type": PUBSUB_PUBLISHED, "source": "x"}, {"message": {"attributes": NOTIFICATION, "data": "%%%"}}),
        CloudEvent({"type": PUBSUB_PUBLISHED, "source": "x"}, {"no": "message"}),
    ],
    ids=["missing-fields", "not-json", "not-object", "bad-generation", "no-payload", "bad-base64", "no-message"],
)
def test_undecodable_events_say_why(event: CloudEvent) -> None:
    with pytest.raises(UndecodableEvent):
        decode_finalize(event)
