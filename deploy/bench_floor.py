"""The benchmark's one-hop floor: a function that does nothing but record, in Firestore, when its event arrived.

Served by functions-framework behind its own push subscription, it measures upload → notification → push →
one Firestore write: the least any pipeline stage can cost on this machine.
"""

from __future__ import annotations

import hashlib
import time

import functions_framework
from cloudevents.http import CloudEvent

from bootstrap import Services
from events.decode import decode_finalize

FLOOR_PREFIX = "bench-floor/"
FLOOR_COLLECTION = "bench_floor"

_services: Services | None = None


def floor_doc_id(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()[:32]


@functions_framework.cloud_event
def record(cloud_event: CloudEvent) -> None:
    global _services
    finalized = decode_finalize(cloud_event)
    if finalized is None or not finalized.name.startswith(FLOOR_PREFIX):
        return
    arrived = time.time()
    _services = _services or Services.from_environment()
    db = _services.firestore_client
    db.collection(FLOOR_COLLECTION).document(floor_doc_id(finalized.name)).set({"arrived": arrived})
