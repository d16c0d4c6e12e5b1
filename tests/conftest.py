"""Session fixtures: real emulators on free ports, started once, stopped at the end."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, sync_playwright

from deploy.fmu_build import build_fmu
from deploy.stack import LocalStack, Ports
from jobs.launchers.processes import process_stats
from schemas.settings import Settings
from tests.support import (
    FMU_SCRIPTS,
    ISSUED_SECRETS,
    TEST_PROJECT,
    TEST_SIGNING_SECRET,
    TEST_WEB_SECRET_KEY,
    chromium,
    secrets_in_logs,
)


def _start(tmp_path_factory: pytest.TempPathFactory, name: str, full: bool) -> Iterator[LocalStack]:
    settings = Settings(
        project=TEST_PROJECT,
        bucket=f"validibot-{name}",
        inbox_bucket=f"validibot-{name}-inbox",
        signing_secret=TEST_SIGNING_SECRET,
        web_secret_key=TEST_WEB_SECRET_KEY,
        # Integration tests deliver each event themselves (the chain's own tests turn it on); the whole stack
        # runs as users get it, ticking (more often than `validibot up`, so the tests wait less).
        inline_chain=full,
        tick_seconds=2,
        # A closed live page is noticed at its stream's next keep-alive: soon, so the tests see it released.
        web_live_heartbeat_seconds=1.0,
        # The whole stack logs as in production, JSON lines (tests/e2e/test_structured_logs.py reads them).
        log_format="json" if full else "text",
        # Every test signs in from 127.0.0.1; the per-address limit has its own test (test_web_limits.py).
        signin_rate_limit="100000 per minute",
    )
    stack = LocalStack(Ports.free(), settings, tmp_path_factory.mktemp(f"{name}-logs"))
    saved = {k: os.environ.get(k) for k in stack.env}
    try:
        stack.start(functions=full, web=full)
        if full:
            stack.start_ticker()
        yield stack
    finally:
        stack.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    # After the whole suite has used the stack: no key or password any test made may be in any of its logs.
    leaked = secrets_in_logs(stack.log_dir, ISSUED_SECRETS)
    assert not leaked, f"secrets reached the stack's logs: {leaked}"


@pytest.fixture(scope="session", autouse=True)
def no_job_outlives_the_session() -> Iterator[None]:
    """Jobs outlive whoever launched them, as Cloud Run jobs do; those the tests launched from this process (not
    from a stack's functions, which its stop ends) are stopped here, so a failed test leaves no job running."""
    yield
    session = os.getsid(0)
    for process in process_stats():
        if process.session == session and process.pgid == process.pid != os.getpid() and _is_job(process.pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)


def _is_job(pid: int) -> bool:
    try:
        return b"jobs.run" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


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


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    """Headless Debian chromium driven by Playwright, once per session."""
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(chromium()), headless=True)
        yield launched
        launched.close()
