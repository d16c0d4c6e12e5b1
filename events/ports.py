"""The port through which the pipeline tells downstream subscribers what happened (DESIGN §8)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from schemas.lifecycle import LifecycleEvent


class Publisher(Protocol):
    def publish(self, events: Iterable[LifecycleEvent]) -> None:
        """Publish and wait for every event, so a handler acknowledges only what is really sent."""
        ...
