"""Run a lightweight validator inside the launching function; it writes output.json like any job would."""

from __future__ import annotations

from dataclasses import dataclass

from jobs.runtime import execute
from schemas.envelopes import InputEnvelope
from store.objects import ObjectStore


@dataclass(frozen=True)
class LaunchResult:
    execution_name: str | None = None


class InlineLauncher:
    name = "inline"

    def __init__(self, objects: ObjectStore, max_messages: int) -> None:
        self._objects = objects
        self._max_messages = max_messages

    def launch(self, envelope: InputEnvelope, input_sha256: str) -> LaunchResult:
        execute(envelope, input_sha256, self._objects, self._max_messages)
        return LaunchResult()
