"""Run a simulation engine (EnergyPlus, the FMU simulation child) isolated from its job and from other jobs.

Engines run user-supplied models, and an FMU is native code. So an engine

- runs as a user of its own: as root, each job's scratch folder reserves an id from ENGINE_IDS, and the engine runs
  with that uid and gid (no passwd entry needed), no supplementary groups and no_new_privs. It owns its work folder
  (0700); it cannot enter another job's scratch folder (0710, group: that job's engine id) or read root's files;
- lives in new namespaces: network (only a loopback that is down: nothing to connect to), pid (no other process is
  visible, the job's /proc/<pid>/environ included, and whatever the engine starts dies with it) and mount, with a
  fresh tmpfs on /tmp and on the job's home folder, into which only the work folder and the Python installation are
  bound back;
- gets a bare environment: the job's signing key, credentials and emulator addresses never reach it;
- dies with its job: it stays in the job's process group (the local launcher's killpg takes it), PR_SET_PDEATHSIG
  kills it however the job dies, and at its timeout the job kills the namespace's init, which takes all of it.

Scratch layout (the folder's name reserves the id on this host: mkdir is atomic):

    {tempfile.gettempdir()}/validibot-{id}/   root:{id} 0710
        inputs/                               root 0700: the job's downloads; validators copy what the engine needs
        work/                                 made by the runtime; {id}:{id} 0700 while an engine runs

Not as root, engines run as the job's own user, in a user namespace when the kernel allows one. Whatever is refused
is logged once per process at WARNING, and engines still run.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from shlex import quote

log = logging.getLogger(__name__)

# High enough to be nobody's user and below 2**31, which some tools still treat as the largest uid.
ENGINE_IDS = range(2_000_000_000, 2_100_000_000)
PASSED_ENV = ("PATH", "LANG", "LC_ALL", "TZ")
NAMESPACES = ["unshare", "--mount", "--net", "--pid", "--fork", "--kill-child=KILL", "--mount-proc"]
# Root of a user namespace (the non-root case): it keeps no capability into the engine.
NO_CAPABILITIES = ["--inh-caps=-all", "--bounding-set=-all"]
TMPFS_OPTIONS = "nosuid,nodev,mode=1777"

_engine_id: ContextVar[int] = ContextVar("engine_id")


@dataclass(frozen=True)
class Isolation:
    namespaces: bool
    own_user: bool  # root only: engines run as their scratch folder's id

    def missing(self) -> list[str]:
        missing = []
        if not self.namespaces:
            missing.append(
                "namespaces: engines can reach the network, share /tmp and the job's home, see other processes, "
                "and what they start in the background can outlive them"
            )
        if not self.own_user and os.geteuid() == 0:
            missing.append("a user of their own: engines run as root")
        elif not self.own_user:
            missing.append(
                "a user of their own: engines run as this job's user and can read whatever it can, other "
                "concurrent jobs' scratch folders included"
            )
        if not self.namespaces and os.geteuid() != 0:
            missing.append("a hidden job environment: engines can read this job's /proc/<pid>/environ")
        return missing


@dataclass(frozen=True)
class Completed:
    returncode: int | None  # None: killed at the timeout
    log_path: Path

    @property
    def timed_out(self) -> bool:
        return self.returncode is None

    @property
    def killed_by(self) -> str | None:
        """The signal that ended the engine, when one did other than the job's own timeout kill."""
        if self.returncode is None or self.returncode >= 0:
            return None
        try:
            return signal.Signals(-self.returncode).name
        except ValueError:
            return f"signal {-self.returncode}"


@contextlib.contextmanager
def scratch_directory() -> Iterator[Path]:
    """A job's scratch folder (layout above), removed on every exit path; engines started in it run as its id."""
    engine_id, scratch = _reserve()
    token = _engine_id.set(engine_id)
    try:
        (scratch / "inputs").mkdir(mode=0o700)
        yield scratch
    finally:
        _engine_id.reset(token)
        # Root removes what the engine's uid left; a non-root job's engines ran as the job's own user.
        shutil.rmtree(scratch)


def _reserve() -> tuple[int, Path]:
    while True:
        engine_id = secrets.choice(ENGINE_IDS)
        scratch = Path(tempfile.gettempdir()) / f"validibot-{engine_id}"
        try:
            scratch.mkdir(mode=0o700)
        except FileExistsError:
            continue
        if os.geteuid() == 0:
            os.chown(scratch, 0, engine_id)
            scratch.chmod(0o710)
        return engine_id, scratch


def run_isolated(
    argv: list[str], workdir: Path, timeout_seconds: float, log_path: Path, cwd: Path | None = None
) -> Completed:
    """Run `argv` in `cwd` (default: `workdir`) as the current scratch folder's engine; `workdir` is the one folder it
    may write, and what it leaves there is safe for the job to read once this returns. Output goes to `log_path`."""
    engine_id = _engine_id.get(None)
    if engine_id is None:
        raise RuntimeError("run_isolated must run inside scratch_directory(), which gives the engine its user")
    chosen = isolation()
    cwd = cwd or workdir
    _hand_over(workdir, engine_id if chosen.own_user else None)
    command = _command(argv, chosen, engine_id, workdir, cwd)
    with log_path.open("wb") as sink:
        process = subprocess.Popen(
            command, cwd=cwd, env=_environment(workdir), stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT
        )
    try:
        returncode: int | None = process.wait(timeout=max(timeout_seconds, 0.1))
    except subprocess.TimeoutExpired:
        returncode = None
    finally:
        if process.poll() is None:
            _kill(process, chosen.namespaces)
        _reclaim(workdir)
    return Completed(returncode, log_path)


@functools.cache
def isolation() -> Isolation:
    """The strongest isolation this host grants: found once per process, by starting Python through it."""
    root = os.geteuid() == 0
    *candidates, last = dict.fromkeys([Isolation(True, root), Isolation(False, root), Isolation(False, False)])
    chosen = next((c for c in candidates if _works(c)), last)
    if chosen.missing():
        log.warning("simulation engines run without %s", "; without ".join(chosen.missing()))
    return chosen


def _works(candidate: Isolation) -> bool:
    probe = _command([sys.executable, "-I", "-S", "-c", ""], candidate, ENGINE_IDS.start, Path("/"), Path("/"))
    try:
        done = subprocess.run(probe, cwd="/", env=_environment(Path("/")), capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def _environment(home: Path) -> dict[str, str]:
    return {k: os.environ[k] for k in PASSED_ENV if k in os.environ} | {"HOME": str(home)}


def _command(argv: list[str], isolation: Isolation, engine_id: int, workdir: Path, cwd: Path) -> list[str]:
    if isolation.own_user:
        identity = ["--reuid", str(engine_id), "--regid", str(engine_id), "--clear-groups"]
    else:
        identity = NO_CAPABILITIES if isolation.namespaces else []
    # Last, after any change of uid (which clears it): the engine dies with its parent.
    engine = ["setpriv", *identity, "--no-new-privs", "--pdeathsig", "KILL", "--", *argv]
    if not isolation.namespaces:
        return engine
    hidden = _hidden()
    # The engine's work folder, and the Python installation and this package for the FMU simulation child.
    needed = {p.resolve() for p in (workdir, Path(sys.base_prefix), Path(sys.prefix), Path(__file__).parents[2])}
    kept = sorted(p for p in needed if any(p.is_relative_to(h) for h in hidden))
    user = [] if os.geteuid() == 0 else ["--user", "--map-root-user"]
    # unshare itself dies with the job too; its child, the namespace's init, dies with unshare (--kill-child).
    return [
        "setpriv", "--pdeathsig", "KILL", "--", *NAMESPACES, *user, "--",
        "sh", "-c", _namespace_setup(hidden, kept, cwd), "sandbox", *engine,
    ]  # fmt: skip


def _namespace_setup(hidden: list[Path], kept: list[Path], cwd: Path) -> str:
    """sh that runs first in the new namespaces, as their root: a fresh tmpfs over each hidden folder, the kept ones
    bound back, then the engine. Kept folders are opened first, as fds 3 and up (once hidden, their paths lead
    nowhere), and closed for the engine (from them, `..` would lead to the hidden folders)."""
    fds = {quote(str(path)): 3 + index for index, path in enumerate(kept)}
    lines = ["set -e"]
    lines += [f"exec {fd}<{path}" for path, fd in fds.items()]
    lines += [f"mount -t tmpfs -o {TMPFS_OPTIONS} tmpfs {quote(str(folder))}" for folder in hidden]
    lines += [f"mkdir -p {path} && mount -c --bind /proc/self/fd/{fd} {path}" for path, fd in fds.items()]
    lines += [f"cd {quote(str(cwd))}", 'exec "$@"' + "".join(f" {fd}<&-" for fd in fds.values())]
    return "\n".join(lines)


def _hidden() -> list[Path]:
    """What an engine sees as empty folders: /tmp (other jobs' scratch folders, whatever else the host keeps there) and
    the job's home (its credentials, such as gcloud's application default credentials)."""
    tmp, home = Path("/tmp").resolve(), Path.home().resolve()
    # Scratch folders live in tempfile's folder, which TMPDIR may move out of /tmp.
    hidden = [tmp] + [d for d in (Path(tempfile.gettempdir()).resolve(), home) if d.is_dir() and d != Path("/")]
    return [d for i, d in enumerate(hidden) if not any(d.is_relative_to(h) for h in hidden[:i])]


def _hand_over(workdir: Path, owner: int | None) -> None:
    """Only the engine may enter its work folder; as a user of its own, it owns everything in it."""
    if owner is not None:
        for folder, _, files in os.walk(workdir):
            for path in [folder, *(os.path.join(folder, name) for name in files)]:
                os.chown(path, owner, owner, follow_symlinks=False)
    workdir.chmod(0o700)


def _reclaim(workdir: Path) -> None:
    """Once no engine process is left, make what the job reads from `workdir` the engine's own plain files.

    The job reads and uploads them with its own privileges: a symlink to /etc/shadow, or a hard link to a file the
    engine could not read, would leak it, and a FIFO would hang the job. A non-root engine may also have chmod-ed
    things out of the job's reach."""
    workdir.chmod(0o700)
    for folder, dirs, files in os.walk(workdir):
        for name in dirs + files:
            path = os.path.join(folder, name)
            info = os.lstat(path)
            if stat.S_ISDIR(info.st_mode):
                os.chmod(path, 0o700)
            elif stat.S_ISREG(info.st_mode) and info.st_nlink == 1:
                os.chmod(path, 0o600)
            else:
                os.unlink(path)
        dirs[:] = [d for d in dirs if os.path.isdir(os.path.join(folder, d))]


def _kill(process: subprocess.Popen[bytes], in_pid_namespace: bool) -> None:
    """SIGKILL the engine and whatever it started, and wait until they are gone.

    In a pid namespace, killing its init (unshare's child) ends every process in it, and unshare exits only once the
    namespace is empty. Without one, each descendant is killed; one that already left the tree (a daemon) stays in
    the job's process group, for the launcher's killpg."""
    victims = _descendants(process.pid)
    if not (in_pid_namespace and victims):
        victims.append(process.pid)
    for pid in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    process.wait()


def _descendants(pid: int) -> list[int]:
    found: list[int] = []
    pending = [pid]
    while pending:
        for children in Path(f"/proc/{pending.pop()}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                pids = [int(child) for child in children.read_text().split()]
                found += pids
                pending += pids
    return found
