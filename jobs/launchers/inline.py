"""Run a lightweight validator inside the launching function; it writes output.json like any job would."""

from __future__ import annotations

from jobs.launchers.base import LaunchResult
from jobs.runtime import execute
from schemas.envelopes import InputEnvelope
from schemas.settings import Settings
from store.ports import ObjectStore


class InlineLauncher:
    name = "inline"

    def __init__(self, objects: ObjectStore, settings: Settings) -> None:
        self._objects = objects
        self._settings = settings

    def launch(self, envelope: InputEnvelope, input_sha256: str) -> LaunchResult:
        execute(envelope, input_sha256, self._objects, self._settings)
        return LaunchResult()
