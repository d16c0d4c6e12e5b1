"""Build an FMU from a pythonfmu slave script: the demo FMU and the tests' FMUs are built, never committed."""

from __future__ import annotations

from pathlib import Path


def build_fmu(script: Path, dest_dir: Path) -> Path:
    from pythonfmu.builder import FmuBuilder

    dest_dir.mkdir(parents=True, exist_ok=True)
    return Path(FmuBuilder.build_FMU(script, dest=dest_dir))
