"""Firestore adapter of the RunWatch port: snapshot listeners on a run and on its steps."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from google.cloud import firestore

from schemas.changes import run_path


class FirestoreRunWatch:
    def __init__(self, client: firestore.Client) -> None:
        self._db = client
        self._lock = threading.Lock()
        self._watching = 0

    @property
    def watching(self) -> int:
        return self._watching

    def watch(self, run_id: str, changed: Callable[[], None]) -> Callable[[], None]:
        run = self._db.document(*run_path(run_id))

        def on_snapshot(*_: Any) -> None:
            changed()

        listeners = [run.on_snapshot(on_snapshot), run.collection("steps").on_snapshot(on_snapshot)]
        with self._lock:
            self._watching += 1
        stopped = threading.Event()

        def stop() -> None:
            with self._lock:
                if stopped.is_set():
                    return
                stopped.set()
                self._watching -= 1
            for listener in listeners:
                listener.unsubscribe()

        return stop
