"""The validator family through the whole stack, with the demo workflows `validibot up` applies: XML Schema, an
e-invoice through UBL 2.1 and EN 16931, a meter table, building data against SHACL shapes."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploy.stack import LocalStack
from tests.support import CORPORA, EXAMPLES, cli_submit

pytestmark = pytest.mark.e2e

INVOICES = CORPORA / "xml" / "en16931-ubl" / "ubl" / "examples"


@pytest.mark.parametrize(
    ("workflow", "valid", "invalid", "finding"),
    [
        ("xml-basic", "building-valid.xml", "building-invalid.xml", "is not accepted by the pattern"),
        ("csv-basic", "meters-valid.csv", "meters-invalid.csv", "violates the primary key"),
        ("shacl-basic", "building-valid.ttl", "building-invalid.ttl", "A building has exactly one name"),
    ],
)
def test_demo_workflows_pass_the_valid_example_and_fail_the_invalid_one(
    full_stack: LocalStack, workflow: str, valid: str, invalid: str, finding: str
) -> None:
    passed = cli_submit(full_stack, EXAMPLES / valid, workflow)
    failed = cli_submit(full_stack, EXAMPLES / invalid, workflow)

    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert any(line.startswith("  ERROR") and finding in line for line in failed.stdout.splitlines()), failed.stdout


def test_an_en16931_invoice_passes_both_steps_and_a_broken_one_names_the_rule(
    full_stack: LocalStack, tmp_path: Path
) -> None:
    invoice = INVOICES / "ubl-tc434-example1.xml"
    passed = cli_submit(full_stack, invoice, "ubl-invoice")
    assert passed.returncode == 0, passed.stdout + passed.stderr

    # Without its specification identifier (optional in UBL 2.1, so the schema step passes) business rule BR-01
    # of EN 16931 fires in the second step.
    text = invoice.read_text(encoding="utf-8")
    start, end = (
        text.index("<cbc:CustomizationID>"),
        text.index("</cbc:CustomizationID>") + len("</cbc:CustomizationID>"),
    )
    broken = tmp_path / "no-specification-identifier.xml"
    broken.write_text(text[:start] + text[end:], encoding="utf-8")
    failed = cli_submit(full_stack, broken, "ubl-invoice")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert any(line.startswith("  ERROR") and "[BR-01]" in line for line in failed.stdout.splitlines()), failed.stdout
