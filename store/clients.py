"""Google Cloud clients that find the emulators through the standard environment variables."""

from __future__ import annotations

import os

from google.auth.credentials import AnonymousCredentials
from google.cloud import firestore, storage


def storage_client(project: str) -> storage.Client:
    if os.environ.get("STORAGE_EMULATOR_HOST"):
        return storage.Client(project=project, credentials=AnonymousCredentials())
    return storage.Client(project=project)


def firestore_client(project: str) -> firestore.Client:
    # FIRESTORE_EMULATOR_HOST, when set, is honoured by the client itself.
    return firestore.Client(project=project)
