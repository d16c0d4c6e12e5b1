"""What Linux's /proc says of a process (proc(5)): enough to name one for good and to tell whose it is."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
ZOMBIE = "Z"


@dataclass(frozen=True)
class ProcessStat:
    pid: int
    state: str
    ppid: int
    pgid: int
    session: int
    # Clock ticks after boot. A pid is reused once its process is gone, so pid and start name one process for good.
    start: int

    @property
    def alive(self) -> bool:
        """Still running: a zombie has ended and only waits for its parent to collect its exit status."""
        return self.state != ZOMBIE


def process_stat(pid: int) -> ProcessStat | None:
    """Process `pid` as it is now; None when there is none."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # Field 2, the command name, is in parentheses and may hold spaces and parentheses of its own.
    fields = text.rsplit(")", 1)[1].split()
    return ProcessStat(
        pid=pid,
        state=fields[0],
        ppid=int(fields[1]),
        pgid=int(fields[2]),
        session=int(fields[3]),
        start=int(fields[19]),
    )


def process_stats() -> list[ProcessStat]:
    """Every process on the machine (in this pid namespace) as it is now."""
    return [stat for entry in PROC.iterdir() if entry.name.isdigit() and (stat := process_stat(int(entry.name)))]
