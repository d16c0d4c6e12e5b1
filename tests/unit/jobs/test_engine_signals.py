"""An engine killed by a signal (not by its step's timeout) is a runtime error, not a failed validation."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from jobs.validators import fmu
from jobs.validators.base import ValidationContext
from jobs.validators.energyplus import EnergyPlusValidator
from jobs.validators.fmu import FmuConfig, FmuValidator
from jobs.validators.sandbox import Completed
from schemas.enums import EnvelopeStatus


@pytest.mark.parametrize(
    ("returncode", "killed_by"),
    [
        (-signal.SIGKILL, "SIGKILL"),
        (-signal.SIGSEGV, "SIGSEGV"),
        (-40, "signal 40"),  # a real-time signal: no name
        (0, None),
        (3, None),
        (None, None),  # killed at the timeout: not by a signal of its own
    ],
)
def test_killed_by_names_the_signal(returncode: int | None, killed_by: str | None) -> None:
    assert Completed(returncode, Path("engine.log")).killed_by == killed_by


def test_fmu_simulation_killed_by_a_signal_is_a_runtime_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(fmu, "run_isolated", lambda *_, **__: Completed(-signal.SIGSEGV, tmp_path / "simulation.log"))
    context = ValidationContext(files=[], inputs={}, workdir=tmp_path, timeout_seconds=60, deadline=time.monotonic())
    config = FmuConfig(stop_time=1, step_size=1, output_variables=["room_temperature"])

    result = FmuValidator()._simulate(context, config, tmp_path / "fmu", SimpleNamespace(fmiVersion="2.0"))

    assert result.status == EnvelopeStatus.FAILED_RUNTIME
    assert result.runtime_error == "the FMU simulation was killed by SIGSEGV before it finished"
    assert (result.messages, result.timed_out) == ([], False)


def test_energyplus_killed_by_a_signal_is_a_runtime_error(tmp_path: Path) -> None:
    result = EnergyPlusValidator()._result(tmp_path, Completed(-signal.SIGKILL, tmp_path / "energyplus.log"), 60)

    assert result.status == EnvelopeStatus.FAILED_RUNTIME
    assert result.runtime_error == "EnergyPlus was killed by SIGKILL before it finished"
    assert (result.messages, result.timed_out) == ([], False)


def test_energyplus_failing_on_its_own_is_still_a_finding(tmp_path: Path) -> None:
    result = EnergyPlusValidator()._result(tmp_path, Completed(1, tmp_path / "energyplus.log"), 60)

    assert result.status == EnvelopeStatus.FAILED_VALIDATION
    assert [m.code for m in result.messages] == ["energyplus.exit"]
