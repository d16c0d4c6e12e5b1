"""The schematron validator: config, findings from the SVRL, phases, the transpiled-stylesheet cache, time limits, and
what hostile rules and submissions cannot do (read files, the network or the environment; escape the resources)."""

from __future__ import annotations

import json
import signal
import time
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobs.registry import get_validator
from jobs.validators import schematron
from jobs.validators.base import (
    REPORTING_MARGIN_SECONDS,
    ConfigError,
    InputFile,
    OverBudget,
    ValidationContext,
    parse_config,
)
from jobs.validators.sandbox import Completed, scratch_directory
from jobs.validators.schematron import Checked, SchematronConfig, SchematronValidator, check
from schemas.enums import EnvelopeStatus, Severity
from schemas.envelopes import FileRef, Location, Message

SCH = "http://purl.oclc.org/dsdl/schematron"
XSL = "http://www.w3.org/1999/XSL/Transform"
DOCUMENT = "<invoice><id>INV-1</id><line amount='-3'/><line amount='5'/></invoice>"
PASSWD = Path("/etc/passwd")


def schema(body: str, attributes: str = "") -> str:
    return f'<sch:schema xmlns:sch="{SCH}" xmlns:xsl="{XSL}" queryBinding="xslt3" {attributes}>{body}</sch:schema>'


def stylesheet(body: str) -> str:
    return f'<xsl:stylesheet xmlns:xsl="{XSL}" version="3.0">{body}</xsl:stylesheet>'


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A scratch folder as the runtime makes one: the engine runs as its user."""
    with scratch_directory() as folder:
        yield folder


def context(
    scratch: Path,
    resources: dict[str, str | bytes],
    document: str | bytes = DOCUMENT,
    *,
    seconds: float = 60,
    budget_seconds: float | None = None,
    **config: object,
) -> ValidationContext:
    """The rules are the first resource file unless `config` names them."""
    files = scratch / "inputs"
    data = document.encode() if isinstance(document, str) else document
    (files / "invoice.xml").write_bytes(data)
    stored = {}
    for name, contents in resources.items():
        stored[name] = files / "resources" / name
        stored[name].parent.mkdir(parents=True, exist_ok=True)
        stored[name].write_bytes(contents.encode() if isinstance(contents, str) else contents)
    workdir = scratch / "work"
    workdir.mkdir(exist_ok=True)
    ref = FileRef(name="invoice.xml", role="primary", uri="gs://b/invoice.xml", size_bytes=len(data), sha256="0" * 64)
    now = time.monotonic()
    return ValidationContext(
        files=[InputFile(ref, files / "invoice.xml")],
        inputs={"rules": next(iter(resources)), **config},
        workdir=workdir,
        timeout_seconds=int(seconds),
        deadline=now + REPORTING_MARGIN_SECONDS + seconds,
        budget_deadline=None if budget_seconds is None else now + budget_seconds,
        resources=stored,
    )


def run(scratch: Path, rules: str, document: str | bytes = DOCUMENT, **resources: str | bytes) -> Checked:
    return check(context(scratch, {"rules.sch": rules, **resources}, document))


def texts(checked: Checked) -> list[str]:
    return [m.text for m in checked.result.messages]


# -- Registration and config ------------------------------------------------------------------------------------


def test_registered_inline() -> None:
    validator = get_validator("schematron")
    assert isinstance(validator, SchematronValidator)
    assert validator.mode == "inline"


@pytest.mark.parametrize(
    "config",
    [{}, {"rules": ""}, {"rules": "r.sch", "phase": ""}, {"rules": "r.sch", "schema": "r.sch"}],
)
def test_config_is_checked(config: dict) -> None:
    with pytest.raises(ConfigError):
        parse_config(SchematronValidator(), config)


def test_config_keys() -> None:
    config = parse_config(SchematronValidator(), {"rules": "r.sch", "resources": ["inc/*.sch"], "phase": "p"})
    assert config == SchematronConfig(rules="r.sch", resources=["inc/*.sch"], phase="p")


# -- Findings -------------------------------------------------------------------------------------------------

FLAGGED = schema(
    """
    <sch:pattern>
      <sch:rule context="line" id="LINE">
        <sch:assert id="BR-1" flag="fatal" test="@amount >= 0">Amount <sch:value-of select="@amount"/> is
          negative.</sch:assert>
        <sch:assert flag="warning" test="false()">Lines are looked at.</sch:assert>
        <sch:report id="BR-2" role="info" test="@amount > 0">A positive line.</sch:report>
        <sch:report id="BR-3" test="@amount > 0" diagnostics="d1">Reported.</sch:report>
      </sch:rule>
      <sch:rule context="invoice">
        <sch:assert test="false()" role="warn"/>
        <sch:assert id="BR-4" test="false()" flag="critical" role="Information">Unknown flag, known role.</sch:assert>
        <sch:assert id="BR-5" test="false()">No flag.</sch:assert>
      </sch:rule>
    </sch:pattern>
    <sch:diagnostics>
      <sch:diagnostic id="d1">Amount was <sch:value-of select="@amount"/>.</sch:diagnostic>
    </sch:diagnostics>
    """
)


def test_failed_asserts_and_reports_are_findings_with_code_severity_and_location(scratch: Path) -> None:
    checked = run(scratch, FLAGGED)

    assert checked.result.status == EnvelopeStatus.FAILED_VALIDATION
    line = "/Q{}invoice[1]/Q{}line"
    # In document order: the invoice's, then each line's.
    assert checked.result.messages == [
        # Neither an id nor a rule id: a generic code; no text: the test.
        Message(
            severity=Severity.WARNING,
            code="schematron.failed_assert",
            text="the test 'false()' failed",
            location=Location(file_role="primary", path="/Q{}invoice[1]"),
        ),
        Message(
            severity=Severity.INFO,
            code="BR-4",
            text="Unknown flag, known role.",
            location=Location(file_role="primary", path="/Q{}invoice[1]"),
        ),
        Message(
            severity=Severity.ERROR,
            code="BR-5",
            text="No flag.",
            location=Location(file_role="primary", path="/Q{}invoice[1]"),
        ),
        Message(
            severity=Severity.ERROR,
            code="BR-1",
            text="Amount -3 is negative.",
            location=Location(file_role="primary", path=f"{line}[1]"),
        ),
        # No id: the rule's.
        Message(
            severity=Severity.WARNING,
            code="LINE",
            text="Lines are looked at.",
            location=Location(file_role="primary", path=f"{line}[1]"),
        ),
        Message(
            severity=Severity.WARNING,
            code="LINE",
            text="Lines are looked at.",
            location=Location(file_role="primary", path=f"{line}[2]"),
        ),
        Message(
            severity=Severity.INFO,
            code="BR-2",
            text="A positive line.",
            location=Location(file_role="primary", path=f"{line}[2]"),
        ),
        # A report without flag or role is INFO; its diagnostics follow its text.
        Message(
            severity=Severity.INFO,
            code="BR-3",
            text="Reported. (Amount was 5.)",
            location=Location(file_role="primary", path=f"{line}[2]"),
        ),
    ]
    assert {m.name: m.value for m in checked.result.metrics} == {
        "failed_asserts": 6,
        "successful_reports": 2,
        "fired_rules": 3,
    }
    assert checked.svrl is not None


def test_a_document_the_rules_accept_passes(scratch: Path) -> None:
    rules = schema(
        '<sch:pattern><sch:rule context="line"><sch:assert test="@amount">x</sch:assert></sch:rule></sch:pattern>'
    )

    checked = run(scratch, rules)

    assert checked.result.status == EnvelopeStatus.SUCCESS
    assert checked.result.messages == []
    assert {m.name: m.value for m in checked.result.metrics}["fired_rules"] == 2


PHASED = schema(
    """
    <sch:phase id="ids"><sch:active pattern="id"/></sch:phase>
    <sch:phase id="lines"><sch:active pattern="line"/></sch:phase>
    <sch:pattern id="id"><sch:rule context="id"><sch:assert id="ID" test="false()">id</sch:assert></sch:rule>
    </sch:pattern>
    <sch:pattern id="line"><sch:rule context="line"><sch:assert id="LINE" test="false()">line</sch:assert></sch:rule>
    </sch:pattern>
    """,
    'defaultPhase="ids"',
)


@pytest.mark.parametrize(
    ("phase", "codes"), [(None, ["ID"]), ("lines", ["LINE", "LINE"]), ("#ALL", ["ID", "LINE", "LINE"])]
)
def test_phase_selects_the_patterns(scratch: Path, phase: str | None, codes: list[str]) -> None:
    config = {} if phase is None else {"phase": phase}
    checked = check(context(scratch, {"rules.sch": PHASED}, **config))
    assert [m.code for m in checked.result.messages] == codes


def test_a_phase_the_rules_do_not_define_is_refused(scratch: Path) -> None:
    # SchXslt2 would run no pattern at all: every document would pass.
    with pytest.raises(ConfigError, match=r"the phase 'line' is not one the rules define \(phases: ids, lines\)"):
        check(context(scratch, {"rules.sch": PHASED}, phase="line"))


def test_a_dynamic_error_is_an_error_finding(scratch: Path) -> None:
    rules = schema(
        '<sch:ns prefix="xs" uri="http://www.w3.org/2001/XMLSchema"/>'
        '<sch:pattern><sch:rule context="id"><sch:assert test="xs:integer(.) > 0"/></sch:rule></sch:pattern>'
    )

    checked = run(scratch, rules)

    assert checked.result.status == EnvelopeStatus.FAILED_VALIDATION
    [finding] = checked.result.messages
    assert (finding.severity, finding.code) == (Severity.ERROR, "schematron.dynamic_error")
    assert finding.text.startswith("the rules stopped with an error, so the document was not fully validated: ")
    assert "FORG0001" in finding.text


# -- The rules ------------------------------------------------------------------------------------------------


def test_a_precompiled_stylesheet_is_run_as_it_is(scratch: Path) -> None:
    svrl = stylesheet(
        """<xsl:template match="/"><svrl:schematron-output xmlns:svrl="http://purl.oclc.org/dsdl/svrl">
          <xsl:for-each select="//line[@amount &lt; 0]">
            <svrl:failed-assert id="NEG" flag="warning" location="/invoice/line"><svrl:text>negative</svrl:text>
            </svrl:failed-assert>
          </xsl:for-each></svrl:schematron-output></xsl:template>"""
    )

    checked = check(context(scratch, {"rules.xsl": svrl}))

    assert [(m.severity, m.code, m.text) for m in checked.result.messages] == [(Severity.WARNING, "NEG", "negative")]


@pytest.mark.parametrize(
    ("rules", "error"),
    [
        ("<rules/>", r"neither an ISO Schematron schema nor an XSLT stylesheet \(the root element is rules\)"),
        ('<schema xmlns="http://www.ascc.net/xml/schematron"/>', "are Schematron 1.5"),
        (f'<sch:schema xmlns:sch="{SCH}" queryBinding="exslt"/>', "use the query binding 'exslt'"),
        ("not xml", "are not XML"),
        (schema('<sch:pattern is-a="missing"/>'), "does not define an abstract pattern with an id of 'missing'"),
        (
            schema('<sch:pattern><sch:rule context="*"><sch:assert test="((">x</sch:assert></sch:rule></sch:pattern>'),
            "could not be compiled: .*XPST0003",
        ),
    ],
)
def test_rules_that_cannot_be_used_are_a_config_error(scratch: Path, rules: str, error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        run(scratch, rules)


@pytest.mark.parametrize(
    ("template", "error"),
    [
        ('<xsl:template match="/"><report/></xsl:template>', "their output is a report element"),
        ('<xsl:template match="/">text</xsl:template>', "their output is not well-formed XML"),
    ],
)
def test_a_stylesheet_must_make_an_svrl_report(scratch: Path, template: str, error: str) -> None:
    with pytest.raises(ConfigError, match=f"did not make an SVRL report: {error}"):
        check(context(scratch, {"rules.xsl": stylesheet(template)}))


def test_the_rules_must_be_a_resource_file(scratch: Path) -> None:
    with pytest.raises(ConfigError, match=r"'other\.sch' are not one of the step's resource files"):
        check(context(scratch, {"rules.sch": PHASED}, rules="other.sch"))


def test_a_stylesheet_takes_no_phase(scratch: Path) -> None:
    with pytest.raises(ConfigError, match="phase applies to a Schematron schema"):
        check(context(scratch, {"rules.xsl": stylesheet("")}, phase="p"))


def test_includes_and_documents_resolve_among_the_resource_files(scratch: Path) -> None:
    """An include relative to the file it is in; doc() and unparsed-text() relative to the rules, whose stylesheet
    the rule becomes part of."""
    rules = schema('<sch:include href="patterns/ids.sch"/>')
    included = f'<sch:pattern xmlns:sch="{SCH}"><sch:include href="../rules/id.sch"/></sch:pattern>'
    rule = f"""<sch:rule xmlns:sch="{SCH}" context="id">
      <sch:assert id="KNOWN" test=". = doc('codes/ids.xml')//code">Unknown id</sch:assert>
      <sch:report id="TEXT" test="true()"><sch:value-of select="unparsed-text('codes/note.txt')"/></sch:report>
    </sch:rule>"""

    checked = run(
        scratch,
        rules,
        **{
            "patterns/ids.sch": included,
            "rules/id.sch": rule,
            "codes/ids.xml": "<codes><code>INV-2</code></codes>",
            "codes/note.txt": "a note",
        },
    )

    assert [(m.code, m.text) for m in checked.result.messages] == [("KNOWN", "Unknown id"), ("TEXT", "a note")]


def test_the_transpiled_stylesheet_is_cached_by_the_rules_and_resources(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each run in a scratch folder of its own, as each step gets one."""
    monkeypatch.setattr(schematron, "_stylesheets", OrderedDict())
    transpiled = []
    for rules, code in [("cached.sch", "A"), ("cached.sch", "A"), ("cached.sch", "B"), ("renamed.sch", "A")]:
        body = f'<sch:pattern><sch:rule context="id"><sch:assert id="{code}" test="false()"/></sch:rule></sch:pattern>'
        with scratch_directory() as folder:
            checked = check(context(folder, {rules: schema(body)}))
            request = json.loads((folder / "work" / "request.json").read_text())
        assert [m.code for m in checked.result.messages] == [code]
        transpiled.append(request["transpiler"] is not None)

    # The same rules again come from the cache; other contents or another name are transpiled anew.
    assert transpiled == [True, False, True, True]


# -- Time limits ----------------------------------------------------------------------------------------------

# Tail-recursive, so Saxon loops rather than running out of stack.
ENDLESS = schema(
    """
    <sch:ns prefix="f" uri="urn:f"/>
    <xsl:function name="f:count" as="xs:boolean" xmlns:f="urn:f" xmlns:xs="http://www.w3.org/2001/XMLSchema">
      <xsl:param name="n" as="xs:integer"/>
      <xsl:sequence select="if ($n lt 0) then true() else f:count($n + 1)"/>
    </xsl:function>
    <sch:pattern><sch:rule context="/"><sch:assert test="f:count(0)">x</sch:assert></sch:rule></sch:pattern>
    """
)


def test_rules_past_the_steps_time_are_stopped(scratch: Path) -> None:
    started = time.monotonic()
    checked = check(context(scratch, {"rules.sch": ENDLESS}, seconds=2))

    assert time.monotonic() - started < 10
    assert checked.result.timed_out
    assert checked.result.status == EnvelopeStatus.FAILED_RUNTIME
    assert checked.result.runtime_error == (
        "the Schematron validation did not finish within the step's 2 s timeout and was stopped"
    )


def test_inline_rules_past_the_budget_are_handed_to_a_job(scratch: Path) -> None:
    started = time.monotonic()
    with pytest.raises(OverBudget):
        check(context(scratch, {"rules.sch": ENDLESS}, budget_seconds=1.5))
    assert time.monotonic() - started < 10


def test_an_engine_that_dies_is_a_runtime_error(scratch: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(schematron, "run_isolated", lambda *_, **__: Completed(-signal.SIGKILL, scratch / "x.log"))

    result = SchematronValidator().validate(context(scratch, {"rules.sch": PHASED}))

    assert result.status == EnvelopeStatus.FAILED_RUNTIME
    assert result.runtime_error == (
        "the Schematron engine stopped without a result (it was killed by SIGKILL); operators have its log"
    )


# -- Hostile rules and submissions ------------------------------------------------------------------------------


def refused(checked: Checked) -> str:
    """The one finding, which must say that access was refused and quote nothing it would have read."""
    [finding] = checked.result.messages
    assert (finding.severity, finding.code) == (Severity.ERROR, "schematron.dynamic_error")
    assert "root:" not in finding.text
    return finding.text


@pytest.mark.parametrize(
    "expression",
    [
        "document('file:///etc/passwd')",
        "doc('file:///etc/passwd')",
        "doc('/etc/passwd')",
        "unparsed-text('file:///etc/passwd')",
        "unparsed-text-lines('/etc/passwd')",
        "json-doc('file:///etc/passwd')",
        "collection('file:///etc/')",
        "doc('http://127.0.0.1:9/x.xml')",
        "doc('../../../../../../etc/passwd')",
    ],
)
def test_rules_cannot_read_files_or_the_network(scratch: Path, expression: str) -> None:
    assert "root:" in PASSWD.read_text()  # what a successful read would show
    rules = schema(
        f"""<sch:pattern><sch:rule context="/">
          <sch:report test="true()">read: <sch:value-of select="string-join({expression}, ' ')"/></sch:report>
        </sch:rule></sch:pattern>"""
    )

    text = refused(run(scratch, rules))

    assert any(why in text for why in ("has been prohibited", "has been disallowed", "not one of the step's resource"))


def test_a_test_that_reads_a_file_cannot_see_it_either(scratch: Path) -> None:
    rules = schema(
        """<sch:pattern><sch:rule context="/">
          <sch:assert test="contains(unparsed-text('file:///etc/passwd'), 'root:')">x</sch:assert>
        </sch:rule></sch:pattern>"""
    )

    assert "Access to URI file:///etc/passwd has been prohibited" in refused(run(scratch, rules))


def test_rules_cannot_read_the_environment_or_system_properties(scratch: Path) -> None:
    # PATH reaches the engine (its environment is otherwise bare): Saxon itself must refuse to answer.
    rules = schema(
        """<sch:pattern><sch:rule context="/">
          <sch:report id="ENV" test="true()">[<sch:value-of select="environment-variable('PATH')"/>]
            [<sch:value-of select="count(available-environment-variables())"/>]
            [<sch:value-of select="system-property('user.home')"/>]</sch:report>
        </sch:rule></sch:pattern>"""
    )

    assert texts(run(scratch, rules)) == ["[] [0] []"]


@pytest.mark.parametrize(
    "href", ["file:///etc/passwd", "/etc/passwd", "../../../../../../etc/passwd", "missing.sch", "http://127.0.0.1:9/x"]
)
def test_includes_reach_no_file_but_the_resource_files(scratch: Path, href: str) -> None:
    with pytest.raises(ConfigError, match="could not be transpiled") as raised:
        run(scratch, schema(f'<sch:include href="{href}"/>'))
    assert "root:" not in str(raised.value)


@pytest.mark.parametrize("element", ["include", "import"])
def test_a_stylesheets_includes_reach_no_file_but_the_resource_files(scratch: Path, element: str) -> None:
    with pytest.raises(ConfigError, match="could not be compiled"):
        check(context(scratch, {"rules.xsl": stylesheet(f'<xsl:{element} href="file:///etc/passwd"/>')}))


def test_rules_cannot_write_files(scratch: Path) -> None:
    target = scratch / "work" / "written.txt"
    rules = stylesheet(
        f'<xsl:template match="/"><xsl:result-document href="{target.as_uri()}">x</xsl:result-document></xsl:template>'
    )

    with pytest.raises(ConfigError, match="xsl:result-document is disabled"):
        check(context(scratch, {"rules.xsl": rules}))
    assert not target.exists()


@pytest.mark.parametrize(
    "document",
    [
        '<!DOCTYPE invoice [<!ENTITY x SYSTEM "file:///etc/passwd">]><invoice>&x;</invoice>',
        '<!DOCTYPE invoice SYSTEM "http://127.0.0.1:9/invoice.dtd"><invoice/>',
        '<!DOCTYPE l [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]><l>&b;</l>',
    ],
)
def test_a_submission_with_a_doctype_is_refused_before_the_rules_run(scratch: Path, document: str) -> None:
    checked = run(scratch, PHASED, document)

    assert checked.svrl is None
    [finding] = checked.result.messages
    assert (finding.severity, finding.code) == (Severity.ERROR, "xml.doctype_refused")
    assert not (scratch / "work" / "request.json").exists()


def test_a_malformed_submission_is_a_finding(scratch: Path) -> None:
    [finding] = run(scratch, PHASED, "<invoice>").result.messages
    assert (finding.code, finding.location) == ("xml.malformed", Location(file_role="primary", line=1, column=10))


def test_a_resource_file_with_a_doctype_is_refused(scratch: Path) -> None:
    codes = '<!DOCTYPE codes [<!ENTITY x SYSTEM "file:///etc/passwd">]><codes>&x;</codes>'
    with pytest.raises(ConfigError, match=r"'codes\.xml' has a document type declaration"):
        run(scratch, PHASED, **{"codes.xml": codes})
