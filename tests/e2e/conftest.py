"""Helpers for driving the whole local stack as a user does."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from pathlib import Path

from deploy.stack import LocalStack

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
VALIDIBOT = Path(sys.executable).parent / "validibot"


def submit(stack: LocalStack, file: Path, workflow: str = "json-basic") -> subprocess.CompletedProcess[str]:
    """`validibot submit FILE --workflow WORKFLOW --wait`, as a user runs it against this stack."""
    env = {**os.environ, **stack.env, **stack.settings_env(), "VALIDIBOT_WEB_URL": stack.web_url}
    return subprocess.run(
        [str(VALIDIBOT), "submit", str(file), "--workflow", workflow, "--wait", "--timeout", "120"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def page(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()
