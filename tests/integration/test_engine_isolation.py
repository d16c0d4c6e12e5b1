"""Simulation engines are isolated: a hostile FMU gets nothing, and no engine outlives its job or its timeout.

No emulators: the validator and the sandbox are the unit. The "job" is a real child process (this module run as
`python -m tests.integration.test_engine_isolation`), so that its environment holds the signing key the way a
launched job's does, in its initial environment, which is what /proc/<pid>/environ shows.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from jobs.validators import sandbox
from jobs.validators.base import InputFile, ValidationContext
from jobs.validators.fmu import FmuValidator
from jobs.validators.sandbox import ENGINE_IDS, isolation, run_isolated, scratch_directory
from schemas.envelopes import FileRef
from tests.support import FMU_SCRIPTS, ROOT

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="engines get a user of their own only when the job runs as root"),
]

THIS_MODULE = "tests.integration.test_engine_isolation"
PUBLIC_ADDRESS_PROBE = "connect to 8.8.8.8:53"


def _alive(marker: str) -> list[int]:
    """Processes (zombies aside) whose command line is `sleep <marker>`."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if proc.joinpath("cmdline").read_bytes() == f"sleep\0{marker}\0".encode():
                state = proc.joinpath("stat").read_text().rsplit(")", 1)[1].split()[0]
                found += [] if state == "Z" else [int(proc.name)]
        except OSError:
            continue
    return found


def _wait_until(condition: Callable[[], bool], seconds: float) -> bool:
    """Whether `condition()` came to hold, polling for at most `seconds` (a patience, not a measured speed)."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


# -- The job side: run in a child process ----------------------------------------------------------------------------


def hostile_job(fmu: Path, other_scratch: Path, port: int) -> dict[str, object]:
    """The probes without isolation (a plain child of this job), then the same probes from inside the FMU."""
    targets = json.dumps({"other_scratch": str(other_scratch), "job_pid": os.getpid(), "port": port})
    control = subprocess.run(
        [sys.executable, str(FMU_SCRIPTS["Hostile"]), targets], capture_output=True, text=True, check=True
    )
    with scratch_directory() as scratch:
        # Laid out as the runtime does: the download under inputs/, the validator's folder work/.
        primary = scratch / "inputs" / "0" / fmu.name
        primary.parent.mkdir()
        shutil.copy(fmu, primary)
        workdir = scratch / "work"
        workdir.mkdir()
        data = primary.read_bytes()
        ref = FileRef(
            name=fmu.name,
            role="primary",
            uri=f"gs://validibot-test/{fmu.name}",
            size_bytes=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
        )
        config = {"stop_time": 1, "step_size": 1, "output_variables": ["leaks"], "input_values": {"targets": targets}}
        result = FmuValidator().validate(
            ValidationContext(
                files=[InputFile(ref=ref, path=primary)],
                inputs=config,
                workdir=workdir,
                timeout_seconds=120,
                deadline=time.monotonic() + 120,
            )
        )
        report = workdir / "probes.json"
        isolated = json.loads(report.read_text()) if report.is_file() else None
    return {
        "control": json.loads(control.stdout),
        "isolated": isolated,
        "status": result.status.value,
        "runtime_error": result.runtime_error,
        "metrics": {m.name: m.value for m in result.metrics},
    }


def sleeping_job(marker: str) -> None:
    """An engine that also starts a process of its own in a new session, as a daemon would."""
    with scratch_directory() as scratch:
        print(scratch, flush=True)
        (scratch / "work").mkdir()
        run_isolated(["sh", "-c", f"setsid sleep {marker} & sleep {marker}"], scratch / "work", 600, scratch / "log")


# -- The tests ---------------------------------------------------------------------------------------------------------


@pytest.fixture
def listener() -> Iterator[int]:
    """A TCP port on 127.0.0.1 that accepts connections (the kernel completes them without accept())."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield server.getsockname()[1]


@pytest.mark.parametrize(
    ("scratch_parent", "other_scratch_refused_with"),
    [("/tmp", "FileNotFoundError"), ("/var/tmp", "PermissionError")],
    ids=["hidden-by-the-mount-namespace", "refused-to-the-engine-user"],
)
def test_hostile_fmu_gets_nothing(
    fmus: dict[str, Path],
    listener: int,
    monkeypatch: pytest.MonkeyPatch,
    scratch_parent: str,
    other_scratch_refused_with: str,
) -> None:
    # Under /tmp, the engine's private /tmp hides other jobs' scratch folders; a job whose TMPDIR put its scratch
    # elsewhere is out of this engine's hidden folders, and its uid must be refused.
    monkeypatch.setattr(tempfile, "tempdir", scratch_parent)
    secret = f"secret-{uuid.uuid4().hex}"
    with scratch_directory() as other:
        monkeypatch.setattr(tempfile, "tempdir", None)
        monkeypatch.delenv("TMPDIR", raising=False)
        # A concurrent job's scratch folder: its download, and a file its engine wrote.
        (other / "inputs" / "0").mkdir()
        (other / "inputs" / "0" / "secret.txt").write_text(f"other job's input {secret}")
        (other / "work").mkdir()
        (other / "work" / "secret.txt").write_text(f"other job's result {secret}")
        monkeypatch.setenv("VALIDIBOT_SIGNING_KEY", secret)
        job = subprocess.run(
            [sys.executable, "-m", THIS_MODULE, "hostile", str(fmus["Hostile"]), str(other), str(listener)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=180,
        )
    assert job.returncode == 0, job.stderr
    report = json.loads(job.stdout)
    control, isolated = report["control"], report["isolated"]

    # Without isolation, every probe gets what it reaches for (the public address: unless this host is offline).
    for name, outcome in control.items():
        if name == PUBLIC_ADDRESS_PROBE:
            assert "Network is unreachable" not in outcome.get("refused", ""), outcome
        else:
            assert "got" in outcome, f"control {name}: {outcome}"
    assert secret in json.dumps(control)

    # The FMU ran to the end, and got nothing.
    assert report["status"] == "success", report
    assert report["metrics"] == {"leaks": 0.0}
    assert isolated is not None
    assert set(isolated) == set(control)
    for name, outcome in isolated.items():
        assert "refused" in outcome, f"isolated {name}: {outcome}"
    assert secret not in json.dumps(isolated)
    assert isolated["read /etc/shadow"]["refused"].startswith("PermissionError")
    for name in (
        "list the other job's scratch folder",
        "read the other job's input",
        "read the other job's work folder",
    ):
        assert isolated[name]["refused"].startswith(other_scratch_refused_with)
    assert isolated["connect to 127.0.0.1"]["refused"] == "OSError: [Errno 101] Network is unreachable"
    assert isolated[PUBLIC_ADDRESS_PROBE]["refused"] == "OSError: [Errno 101] Network is unreachable"


def test_scratch_layout_and_what_the_job_reads_back() -> None:
    with scratch_directory() as scratch:
        engine_id = scratch.stat().st_gid
        assert engine_id in ENGINE_IDS
        assert (scratch.stat().st_uid, scratch.stat().st_mode & 0o777) == (0, 0o710)
        assert ((scratch / "inputs").stat().st_uid, (scratch / "inputs").stat().st_mode & 0o777) == (0, 0o700)
        workdir = scratch / "work"
        workdir.mkdir()
        (workdir / "model.idf").write_text("the job's copy of the model")
        script = "stat -c '%u %g %a' . model.idf; ln -s /etc/shadow results.csv; mkfifo outcome.json; echo mine > own"
        completed = run_isolated(["sh", "-c", script], workdir, 30, scratch / "engine.log")

        assert completed.returncode == 0, (scratch / "engine.log").read_text()
        folder, model = (scratch / "engine.log").read_text().splitlines()
        assert folder == f"{engine_id} {engine_id} 700"
        assert model.startswith(f"{engine_id} {engine_id} ")
        # The job never follows the engine's links (it would upload /etc/shadow) nor opens its FIFOs (it would hang).
        assert sorted(p.name for p in workdir.iterdir()) == ["model.idf", "own"]
    assert not scratch.exists()


def test_scratch_is_removed_when_the_validator_fails() -> None:
    scratches: list[Path] = []

    def crashing_validator() -> None:
        with scratch_directory() as scratch:
            scratches.append(scratch)
            (scratch / "work").mkdir()
            engine = ["sh", "-c", "mkdir -p deep/er && echo x > deep/er/file && chmod 0 deep"]
            run_isolated(engine, scratch / "work", 30, scratch / "engine.log")
            raise RuntimeError("the validator crashed")

    with pytest.raises(RuntimeError, match="crashed"):
        crashing_validator()
    [scratch] = scratches
    assert not scratch.exists()


def test_engine_dies_with_a_killed_job() -> None:
    marker = f"{600 + uuid.uuid4().int % 1000}.5"
    job = subprocess.Popen(
        [sys.executable, "-m", THIS_MODULE, "sleep", marker], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert job.stdout is not None
    scratch = Path(job.stdout.readline().strip())
    try:
        assert _wait_until(lambda: len(_alive(marker)) == 2, 30)  # the engine and its setsid child
        job.send_signal(signal.SIGKILL)
        job.wait()
        # Each would sleep for ten minutes more; they are gone because their job is.
        _wait_until(lambda: not _alive(marker), 30)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)  # a killed job cannot remove its own
    assert _alive(marker) == []


def test_timeout_kills_the_engine_and_what_it_started() -> None:
    marker = f"{600 + uuid.uuid4().int % 1000}.25"
    with scratch_directory() as scratch:
        (scratch / "work").mkdir()
        command = ["sh", "-c", f"setsid sleep {marker} & sleep {marker}"]
        completed = run_isolated(command, scratch / "work", 1, scratch / "engine.log")
    # run_isolated returned (the sleeps would have taken ten minutes) because it killed them at the timeout.
    assert completed.timed_out
    assert _alive(marker) == []


def test_engine_crash_is_reported_with_its_signal() -> None:
    with scratch_directory() as scratch:
        (scratch / "work").mkdir()
        crash = [sys.executable, "-c", "import ctypes; ctypes.string_at(0)"]
        completed = run_isolated(crash, scratch / "work", 30, scratch / "engine.log")
    assert (completed.timed_out, completed.killed_by) == (False, "SIGSEGV")


@pytest.fixture
def fresh_isolation() -> Iterator[None]:
    isolation.cache_clear()
    yield
    isolation.cache_clear()


@pytest.mark.usefixtures("fresh_isolation")
def test_refused_namespaces_are_logged_and_engines_still_run(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(sandbox, "NAMESPACES", ["unshare", "--refused-by-this-test"])
    with caplog.at_level(logging.WARNING, logger=sandbox.__name__), scratch_directory() as scratch:
        (scratch / "work").mkdir()
        completed = run_isolated(["echo", "ran"], scratch / "work", 30, scratch / "engine.log")
        output = (scratch / "engine.log").read_text()
    assert (completed.returncode, output) == (0, "ran\n")
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.startswith("simulation engines run without namespaces: engines can reach the network")


NON_ROOT_JOB = """
import importlib.util, logging, os, sys
logging.basicConfig(format="%(levelname)s %(message)s")
spec = importlib.util.spec_from_file_location("sandbox", sys.argv[1])
sandbox = sys.modules["sandbox"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(sandbox)
probe = (
    "import os, socket\\n"
    "print('uid in the namespace', os.getuid())\\n"
    f"print('job environ visible', os.path.exists('/proc/{os.getpid()}/environ'))\\n"
    "try:\\n    socket.create_connection(('127.0.0.1', 1), 2)\\n"
    "except OSError as exc:\\n    print('connect', exc)\\n"
)
with sandbox.scratch_directory() as scratch:
    (scratch / "work").mkdir()
    done = sandbox.run_isolated([sys.executable, "-c", probe], scratch / "work", 30, scratch / "engine.log")
    print((scratch / "engine.log").read_text() + f"exit {done.returncode}")
"""


def test_without_root_engines_run_as_the_job_in_a_user_namespace() -> None:
    nobody, python = 65534, "/usr/bin/python3"
    runs = subprocess.run(["setpriv", f"--reuid={nobody}", f"--regid={nobody}", "--clear-groups", python, "-c", ""])
    if runs.returncode != 0:
        pytest.skip(f"{python} cannot run as uid {nobody} here")
    job = subprocess.run(
        ["setpriv", f"--reuid={nobody}", f"--regid={nobody}", "--clear-groups",
         python, "-c", NON_ROOT_JOB, str(Path(sandbox.__file__))],
        env={"PATH": os.environ["PATH"], "HOME": "/nonexistent", "VALIDIBOT_SIGNING_KEY": "secret-non-root"},
        cwd="/",
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    assert job.returncode == 0, job.stderr
    if "without namespaces" in job.stderr:
        pytest.skip("this kernel refuses unprivileged user namespaces")
    assert job.stderr.startswith("WARNING simulation engines run without a user of their own: engines run as this ")
    assert job.stdout.splitlines() == [
        "uid in the namespace 0",
        "job environ visible False",
        "connect [Errno 101] Network is unreachable",
        "exit 0",
    ]


if __name__ == "__main__":
    if sys.argv[1] == "hostile":
        print(json.dumps(hostile_job(Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]))))
    else:
        sleeping_job(sys.argv[2])
