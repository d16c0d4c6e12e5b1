"""Session fixtures: real emulators on free ports, started once, stopped at the end."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.fmu_build import build_fmu
from deploy.stack import LocalStack, Ports
from schemas.settings import Settings
from tests.support import FMU_SCRIPTS, TEST_PROJECT, TEST_SIGNING_SECRET


def _start(tmp_path_factory: pytest.TempPathFactory, name: str, full: bool) -> Iterator[LocalStack]:
    settings = Settings(
        project=TEST_PROJECT,
        bucket=f"validibot-{name}",
        inbox_bucket=f"validibot-{name}-inbox",
        signing_secret=TEST_SIGNING_SECRET,
        # Integration tests deliver each event themselves (the chain's own tests turn it on); the whole stack
        # runs as users get it.
        inline_chain=full,
    )
    stack = LocalStack(Ports.free(), settings, tmp_path_factory.mktemp(f"{name}-logs"))
    saved = {k: os.environ.get(k) for k in stack.env}
    try:
        stack.start(functions=full, web=full)
        yield stack
    finally:
        stack.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="session")
def emulators(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """Pub/Sub, Firestore and Cloud Storage emulators; the tests drive the handlers themselves."""
    yield from _start(tmp_path_factory, "integration", full=False)


@pytest.fixture(scope="session")
def full_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """The whole `validibot up` stack: emulators, push subscription, functions server and web."""
    yield from _start(tmp_path_factory, "e2e", full=True)


@pytest.fixture(scope="session")
def fmus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The test FMUs, built with pythonfmu from their scripts (no FMU binary is committed)."""
    out = tmp_path_factory.mktemp("fmus")
    return {name: build_fmu(script, out) for name, script in FMU_SCRIPTS.items()}
