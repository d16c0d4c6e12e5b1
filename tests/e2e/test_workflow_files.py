"""Workflows as files through the whole stack: the demo `energyplus-eui` workflow's assertion passing at 150 kWh/m2,
and, applied again with a 100 kWh/m2 target as a new version, failing with the assertion's rendered message."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from deploy.stack import LocalStack
from tests.support import EXAMPLES, cli, cli_submit

pytestmark = pytest.mark.e2e

EUI_WORKFLOW = EXAMPLES / "workflows" / "energyplus-eui.yaml"


def test_the_eui_assertion_passes_at_150_and_fails_at_100_with_its_message(
    full_stack: LocalStack, tmp_path: Path
) -> None:
    passing = cli_submit(full_stack, EXAMPLES / "small-office.idf", "energyplus-eui")
    assert passing.returncode == 0, passing.stdout + passing.stderr
    eui = float(re.search(r"metric  site_eui = ([0-9.]+) kWh/m2", passing.stdout).group(1))
    assert 100 < eui <= 150

    stricter = tmp_path / "energyplus-eui-100.yaml"
    stricter.write_text(
        EUI_WORKFLOW.read_text().replace("slug: energyplus-eui", "slug: energyplus-eui-100").replace("150", "100")
    )
    applied = cli(full_stack, "workflows", "apply", str(stricter))
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert applied.stdout.strip() == "applied  demo/energyplus-eui-100  version 1"

    failing = cli_submit(full_stack, EXAMPLES / "small-office.idf", "energyplus-eui-100")
    assert failing.returncode == 1, failing.stdout + failing.stderr
    assert f"ERROR   /  Site EUI {eui:g} kWh/m2 is above the 100 kWh/m2 target" in failing.stdout
