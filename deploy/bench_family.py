"""The validator family in `make bench` (issue 12): each validator called directly on an input, against the same
input through the pipeline (upload → verdict), in the same run. The inputs are generated here or read in place
from ../shared/corpora (never copied into the project); a validator whose corpus is missing is left out."""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from deploy.workflow_files import WorkflowSource, check_file
from jobs.registry import get_validator
from jobs.validators.base import InputFile, ValidationContext
from jobs.validators.sandbox import scratch_directory
from schemas.envelopes import FileRef, sha256_hex

CORPORA = Path(__file__).resolve().parents[2] / "shared" / "corpora"
UBL_XSD = CORPORA / "xml" / "ubl-2.1-xsd" / "xsd"
UBL_EXAMPLE = CORPORA / "xml" / "en16931-ubl" / "ubl" / "examples" / "ubl-tc434-example1.xml"
EN16931 = CORPORA / "xml" / "en16931-ubl" / "ubl" / "xslt" / "EN16931-UBL-validation.xslt"
SAMPLES = 3


@dataclass(frozen=True)
class Case:
    validator: str
    filename: str
    config: dict
    make_input: Callable[[], bytes]
    # Resource files by name (their path relative to the workflow file) → where to read them from.
    resources: dict[str, Path] = field(default_factory=dict)

    def available(self) -> bool:
        return all(path.is_file() for path in self.resources.values())


def csv_rows(rows: int = 100_000) -> bytes:
    lines = ["meter_id,month,electricity_kwh,gas_kwh"]
    lines += [f"M-{n:06d},2026-{n % 12 + 1:02d}-01,{n % 5000 + 0.5},{n % 300}" for n in range(rows)]
    return ("\n".join(lines) + "\n").encode()


def large_invoice(target_bytes: int = 5_000_000) -> bytes:
    """A valid UBL invoice of about `target_bytes`: the example's invoice line repeated."""
    text = UBL_EXAMPLE.read_text(encoding="utf-8")
    start, end = text.index("<cac:InvoiceLine>"), text.rindex("</cac:InvoiceLine>") + len("</cac:InvoiceLine>")
    lines = text[start:end]
    copies = max(1, target_bytes // len(lines))
    return (text[:start] + lines * copies + text[end:]).encode()


METERS_SCHEMA = {
    "fields": [
        {"name": "meter_id", "type": "string", "constraints": {"required": True, "pattern": "M-[0-9]{6}"}},
        {"name": "month", "type": "date", "constraints": {"required": True}},
        {"name": "electricity_kwh", "type": "number", "constraints": {"required": True, "minimum": 0}},
        {"name": "gas_kwh", "type": "integer", "constraints": {"minimum": 0}},
    ],
    "primaryKey": ["meter_id"],
}


SHAPES = Path(__file__).resolve().parents[1] / "examples" / "workflows" / "shapes" / "building-shapes.ttl"


def building_triples(buildings: int = 3_300) -> bytes:
    """About 10,000 triples: buildings with a name and a floor area, one in a hundred breaking a shape."""
    lines = ["@prefix xsd: <http://www.w3.org/2001/XMLSchema#> .", "@prefix ex: <https://example.org/buildings#> ."]
    for n in range(buildings):
        area = "-1" if n % 100 == 0 else f"{100 + n % 900}.5"
        lines.append(f'ex:b{n} a ex:Building ; ex:name "Building {n}" ; ex:floorArea "{area}"^^xsd:decimal .')
    return ("\n".join(lines) + "\n").encode()


def cases() -> list[Case]:
    ubl = {f"ubl/{path.relative_to(UBL_XSD).as_posix()}": path for path in sorted(UBL_XSD.rglob("*.xsd"))}
    return [
        Case("tabular", "meters.csv", {"schema": METERS_SCHEMA}, csv_rows),
        Case(
            "xml-schema",
            "invoice.xml",
            {"schema_type": "xsd", "schema": "ubl/maindoc/UBL-Invoice-2.1.xsd", "resources": ["ubl/common/*.xsd"]},
            large_invoice,
            ubl,
        ),
        Case(
            "shacl",
            "buildings.ttl",
            {"shapes": "building-shapes.ttl"},
            building_triples,
            {"building-shapes.ttl": SHAPES},
        ),
        Case(
            "schematron",
            "invoice.xml",
            {"rules": "EN16931-UBL-validation.xslt"},
            UBL_EXAMPLE.read_bytes,
            {"EN16931-UBL-validation.xslt": EN16931},
        ),
    ]


def direct_ms(case: Case, data: bytes) -> float:
    """The validator on the input, in this process (its engine sandboxed as in a run), with no pipeline around it."""
    with scratch_directory() as scratch:
        return _timed(case, data, Path(scratch))


def _timed(case: Case, data: bytes, scratch: Path) -> float:
    submission = scratch / case.filename
    submission.write_bytes(data)
    ref = FileRef(name=case.filename, role="primary", uri="file://bench", size_bytes=len(data), sha256=sha256_hex(data))
    context = ValidationContext(
        files=[InputFile(ref, submission)],
        inputs=case.config,
        workdir=scratch,
        timeout_seconds=600,
        deadline=time.monotonic() + 600,
        resources=case.resources,
    )
    validator = get_validator(case.validator)
    started = time.perf_counter()
    result = validator.validate(context)
    elapsed = (time.perf_counter() - started) * 1000
    if result.runtime_error:
        raise RuntimeError(f"{case.validator} could not validate the bench input: {result.runtime_error}")
    return elapsed


def apply_workflow(case: Case, folder: Path, apply: Callable) -> str:
    """The case as a one-step workflow file with its resource files beside it, applied; returns its slug."""
    slug = f"bench-{case.validator}"
    for name, source in case.resources.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(source.read_bytes())
    path = folder / f"{slug}.yaml"
    path.write_text(
        json.dumps(
            {
                "org": "demo",
                "slug": slug,
                "name": f"Bench {case.validator}",
                "steps": [{"key": "check", "name": "Check", "validator": case.validator, "config": case.config}],
            }
        )
    )
    checked, problems = check_file(path)
    if checked is None:
        raise RuntimeError("; ".join(str(problem) for problem in problems))
    apply(checked, WorkflowSource(path).read)
    return slug


def family_figures(apply: Callable, pipeline_ms: Callable[[str, str, bytes], float]) -> dict[str, float]:
    """`<validator>_direct_ms`, `<validator>_pipeline_ms` and `<validator>_overhead_ratio` (p50 of SAMPLES each)."""
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="validibot-bench-family-") as root:
        for case in cases():
            if not case.available():
                continue
            folder = Path(root) / case.validator
            folder.mkdir()
            data = case.make_input()
            slug = apply_workflow(case, folder, apply)
            direct = [direct_ms(case, data) for _ in range(SAMPLES)]
            through = [pipeline_ms(slug, case.filename, data) for _ in range(SAMPLES)]
            key = case.validator.replace("-", "_")
            figures[f"{key}_input_bytes"] = len(data)
            figures[f"{key}_direct_ms"] = round(statistics.median(direct), 1)
            figures[f"{key}_pipeline_ms"] = round(statistics.median(through), 1)
            figures[f"{key}_overhead_ratio"] = round(statistics.median(through) / statistics.median(direct), 2)
    return figures
