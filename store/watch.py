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

    def watch(self, run_id: str, changed: Callable[[], None], limit: int) -> Callable[[], None] | None:
        with self._lock:  # counted and capped in one step, so concurrent pages cannot pass the cap together
            if self._watching >= limit:
                return None
            self._watching += 1
        run = self._db.document(*run_path(run_id))
        listeners: list[Any] = []
        stopped = threading.Event()

        def stop() -> None:
            with self._lock:
                if stopped.is_set():
                    return
                stopped.set()
                self._watching -= 1
            for listener in listeners:
                listener.unsubscribe()

        def on_snapshot(*_: Any) -> None:
            changed()

        try:
            listeners.append(run.on_snapshot(on_snapshot))
            listeners.append(run.collection("steps").on_snapshot(on_snapshot))
        except BaseException:
            stop()
            raise
        return stop
