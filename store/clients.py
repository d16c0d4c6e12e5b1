"""Google Cloud clients that find the emulators through the standard environment variables."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

if TYPE_CHECKING:
    from google.cloud import firestore


def storage_client(project: str) -> storage.Client:
    if os.environ.get("STORAGE_EMULATOR_HOST"):
        return storage.Client(project=project, credentials=AnonymousCredentials())
    return storage.Client(project=project)


def firestore_client(project: str) -> firestore.Client:
    # Imported here: validator jobs use storage only, and every 100 ms of their start-up is paid on every run.
    from google.cloud import firestore

    # FIRESTORE_EMULATOR_HOST, when set, is honoured by the client itself.
    return firestore.Client(project=project)
