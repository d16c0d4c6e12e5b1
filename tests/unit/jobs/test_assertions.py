"""CEL assertions (DESIGN §12) over a step's results."""

from __future__ import annotations

import pytest

from jobs.assertions import AssertionSyntaxError, check_assertions, compile_check, referenced_outputs
from jobs.validators.base import ValidationResult
from schemas.enums import Severity
from schemas.envelopes import AssertionSpec, FileRef, Metric

RESULT = ValidationResult(
    metrics=[Metric(name="site_eui", value=128.4, unit="kWh/m2"), Metric(name="conditioned_area", value=80)],
    outputs={"zones": ["core", "perimeter"]},
)
SUBMISSION = FileRef(name="office.idf", role="primary", uri="gs://b/o", size_bytes=1234, sha256="0" * 64)
EUI = AssertionSpec(
    id="eui-target",
    expr="o.site_eui <= 100.0",
    message="Site EUI {{ o.site_eui }} kWh/m2 is above the 100 kWh/m2 target",
)


def check(*assertions: AssertionSpec, prior: dict | None = None, seconds: float = 1.0):
    return check_assertions(list(assertions), RESULT, prior_steps=prior or {}, submission=SUBMISSION, seconds=seconds)


def test_a_false_assertion_is_a_finding_with_its_id_and_rendered_message() -> None:
    [finding] = check(EUI)

    assert (finding.severity, finding.code) == (Severity.ERROR, "eui-target")
    assert finding.text == "Site EUI 128.4 kWh/m2 is above the 100 kWh/m2 target"


def test_a_true_assertion_says_nothing_and_severity_and_default_message_are_kept() -> None:
    holds = AssertionSpec(id="eui-ok", expr="o.site_eui <= 150.0")
    warn = AssertionSpec(id="zones", expr="size(o.zones) > 2", severity=Severity.WARNING)

    [finding] = check(holds, warn)

    assert (finding.severity, finding.code) == (Severity.WARNING, "zones")
    assert finding.text == "assertion 'zones' does not hold: size(o.zones) > 2"


@pytest.mark.parametrize(
    ("expr", "why"),
    [
        ("o.site_energy <= 150.0", "no such member in mapping: 'site_energy'"),
        ("o.site_eui + 'kWh' == 'x'", "the types do not fit"),
        ("o.site_eui", "it gave 128.4, not true or false"),
    ],
)
def test_an_assertion_that_cannot_be_evaluated_is_an_error_saying_why(expr: str, why: str) -> None:
    [finding] = check(AssertionSpec(id="broken", expr=expr, severity=Severity.INFO))

    assert (finding.severity, finding.code) == (Severity.ERROR, "broken")
    assert finding.text.startswith(f"assertion 'broken' ({expr}) could not be evaluated: {why}")


def test_an_assertion_past_its_time_limit_is_stopped_and_reported() -> None:
    heavy = AssertionSpec(
        id="heavy",
        expr="[1,2,3,4,5,6,7,8,9,10].all(a, [1,2,3,4,5,6,7,8,9,10].all(b, [1,2,3,4,5,6,7,8,9,10].all(c, "
        "[1,2,3,4,5,6,7,8,9,10].all(d, a + b + c + d > 0))))",
    )

    [finding] = check(heavy, seconds=0.01)

    assert finding.text.endswith("could not be evaluated: it took longer than 0.01 s to evaluate")


def test_earlier_steps_and_the_submission_are_in_the_context() -> None:
    prior = {"schema": {"schema_violations": 0}}
    uses = AssertionSpec(
        id="after-clean-schema", expr="steps.schema.schema_violations == 0 && submission.size_bytes > 1000"
    )
    fails = AssertionSpec(id="name", expr="submission.name.endsWith('.epJSON')")

    [finding] = check(uses, fails, prior=prior)

    assert finding.code == "name"


def test_syntax_errors_are_found_at_compile_time_in_the_expression_and_the_message() -> None:
    with pytest.raises(AssertionSyntaxError, match=r"assertion 'bad': 'o.site_eui <=' is not valid CEL"):
        compile_check(AssertionSpec(id="bad", expr="o.site_eui <="))
    with pytest.raises(AssertionSyntaxError, match=r"assertion 'msg': 'o.\)' is not valid CEL"):
        compile_check(AssertionSpec(id="msg", expr="true", message="value {{ o.) }}"))
    compile_check(EUI)
    assert referenced_outputs(EUI) == {"site_eui"}


def test_a_false_assertion_whose_message_cannot_be_rendered_keeps_its_severity() -> None:
    warn = AssertionSpec(
        id="gas",
        expr="o.site_eui > 200.0",
        severity=Severity.WARNING,
        message="gas {{ o.site_gas }} kWh, EUI {{ o.site_eui }}",
    )

    [finding] = check(warn)

    assert (finding.severity, finding.code) == (Severity.WARNING, "gas")
    assert finding.text == "gas <o.site_gas: no such member in mapping: 'site_gas'> kWh, EUI 128.4"
