"""EnergyPlus and FMU models through the whole local stack: push delivery, local job processes, the dashboard."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from deploy.stack import LocalStack
from tests.support import EXAMPLES, cli_submit, signed_in_as

pytestmark = pytest.mark.e2e


def run_id_of(stdout: str) -> str:
    run_id = stdout.splitlines()[0]
    assert re.fullmatch(r"[0-9a-f]{24}", run_id)
    return run_id


def test_energyplus_model_simulates_and_the_run_page_shows_the_results(full_stack: LocalStack) -> None:
    result = cli_submit(full_stack, EXAMPLES / "small-office.idf", "energyplus-basic")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCEEDED  small-office.idf" in result.stdout
    assert "  metric  conditioned_area = 80 m2" in result.stdout
    assert "  file    eplustbl.htm  (" in result.stdout
    run_id = run_id_of(result.stdout)

    browser = signed_in_as(full_stack, "demo")
    detail = browser.get(f"{full_stack.web_url}/orgs/demo/runs/{run_id}").text
    assert "site_electricity = " in detail
    assert "unmet_heating_hours = 0 h" in detail
    assert "Ground Temperatures" in detail  # the WARNING finding from eplusout.err
    link = re.search(r'href="(/orgs/demo/runs/[0-9a-f]{24}/steps/1/artifacts/eplustbl\.htm)"', detail)
    assert link is not None
    sha = re.search(r'<a href="[^"]+/artifacts/eplustbl\.htm">eplustbl\.htm</a></td>\s*<td>[^<]+</td>\s*'
                    r'<td><code title="([0-9a-f]{64})">', detail)  # fmt: skip
    assert sha is not None
    response = browser.get(full_stack.web_url + link.group(1), timeout=10)
    report = response.content
    assert response.headers["Content-Type"].startswith("text/html")
    assert response.headers["Content-Disposition"] == "attachment; filename=eplustbl.htm"
    assert hashlib.sha256(report).hexdigest() == sha.group(1)
    assert b"Annual Building Utility Performance Summary" in report


def test_energyplus_fatal_error_and_unsafe_model_fail_with_their_reasons(full_stack: LocalStack) -> None:
    fatal = cli_submit(full_stack, EXAMPLES / "broken-office.idf", "energyplus-basic")
    unsafe = cli_submit(full_stack, EXAMPLES / "plugin-office.idf", "energyplus-basic")

    assert fatal.returncode == 1, fatal.stdout + fatal.stderr
    assert "ERROR   /  GetSurfaceData: Errors discovered, program terminates." in fatal.stdout
    assert unsafe.returncode == 1, unsafe.stdout + unsafe.stderr
    assert "PythonPlugin:Instance 'Exfiltrate' is not allowed" in unsafe.stdout
    assert "  file    " not in unsafe.stdout  # refused before EnergyPlus could write anything


def test_fmu_runs_through_fmu_basic(full_stack: LocalStack, fmus: dict[str, Path]) -> None:
    result = cli_submit(full_stack, fmus["RoomHeater"], "fmu-basic")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCEEDED  RoomHeater.fmu" in result.stdout
    assert re.search(r"  metric  room_temperature = 19\.\d+", result.stdout)
    assert "  file    results.csv  (" in result.stdout
