"""Schematron validation (DESIGN §9): ISO Schematron with the XSLT 2/3 query binding, run by Saxon-HE (saxonche).

The step's `rules` name one of its resource files: an ISO Schematron schema (`sch:schema`), which the SchXslt2
transpiler (third_party/schxslt2, vendored unmodified) turns into a validation stylesheet, or such a stylesheet made
beforehand (`xsl:stylesheet`/`xsl:transform` producing SVRL, as e-invoicing rule sets ship one). The root element
says which. The stylesheet runs on the submission, and its SVRL report becomes the findings: each failed assert and
successful report is one, coded with its `id` (else its rule's, else a generic code), located by its `location` XPath,
its severity read from its `flag`, else its `role` (SEVERITIES); without either a failed assert is an ERROR and a
report INFO. A dynamic error that stopped the rules is an ERROR finding too.

Saxon runs in a child process, the sandbox's engine (`python -m jobs.validators.schematron REQUEST`):

- Saxon cannot be interrupted in its process: the child is killed at the step's deadline, and, inline, when the
  inline budget is spent, which hands the step to a job. Running inline, EN 16931's rules take about 0.7 s in all
  (0.2 s starting the child, 0.4 s compiling the stylesheet, milliseconds validating an invoice).
- Saxon's functions see the process they run in: `environment-variable()` would read the service's secrets. The
  child gets a bare environment, and Saxon runs with external functions off, under which it answers no environment
  variable or Java system property and refuses `xsl:result-document`.
- Nothing is fetched but the step's resource files: Saxon may fetch only `validibot:` URIs (allowedProtocols), and
  an XML catalog maps `validibot://resources/{name}` to each resource file's copy in the work folder, so that
  `sch:include`, `xsl:include`/`xsl:import`, `doc()`, `document()`, `unparsed-text()` and subordinate documents
  reach those and nothing else. A resource that is XML gets its own URI as the root's `xml:base` in its copy (the
  catalog hands Saxon the copy's `file:` URI, against which relative references would resolve out of reach).

A compiled stylesheet cannot leave the Saxon process it was compiled in (exporting one needs Saxon-EE), so what is
cached, in this process and bounded, is the transpiled stylesheet, by the sha256 of the rules, their phase and every
resource file: transpiling EN 16931's schema with its abstract patterns takes SchXslt2 about 70 s, its preprocessed
form 0.1 s.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import quote

from lxml import etree
from pydantic import BaseModel, ConfigDict, StringConstraints

from jobs.validators.base import ConfigError, ValidationContext, ValidationResult, parse_config
from jobs.validators.sandbox import run_isolated
from jobs.validators.xml_safety import UnsafeXml, parse_untrusted
from schemas.enums import Severity
from schemas.envelopes import Location, Message, Metric

log = logging.getLogger(__name__)

TRANSPILER = Path(__file__).resolve().parents[2] / "third_party" / "schxslt2" / "transpile.xsl"

SCH_NS = "http://purl.oclc.org/dsdl/schematron"
SCHEMATRON_1_5_NS = "http://www.ascc.net/xml/schematron"
XSL_NS = "http://www.w3.org/1999/XSL/Transform"
SVRL_NS = "http://purl.oclc.org/dsdl/svrl"
SCHXSLT_NS = "http://dmaus.name/ns/2023/schxslt"
XML_BASE = "{http://www.w3.org/XML/1998/namespace}base"
CATALOG_NS = "urn:oasis:names:tc:entity:xmlns:xml:catalog"

# The one URI scheme Saxon may fetch; no handler exists for it, so only what the catalog maps it to can be read.
RESOURCE_SCHEME = "validibot"
RESOURCE_BASE_URI = f"{RESOURCE_SCHEME}://resources/"
# The submission's URI: document-uri() and the SVRL name it; nothing can be fetched under it.
SUBMISSION_BASE_URI = f"{RESOURCE_SCHEME}://submission/"
ALLOWED_PROTOCOLS = "http://saxon.sf.net/feature/allowedProtocols"
ALLOW_EXTERNAL_FUNCTIONS = "http://saxon.sf.net/feature/allow-external-functions"

# Query bindings whose queries XPath 3.1 runs as written (ISO Schematron's default, absent, is "xslt").
QUERY_BINDINGS = frozenset({"xslt", "xslt2", "xslt3"})
SEVERITIES = {
    "fatal": Severity.ERROR,
    "error": Severity.ERROR,
    "warning": Severity.WARNING,
    "warn": Severity.WARNING,
    "info": Severity.INFO,
    "information": Severity.INFO,
}
FAILED_ASSERT_CODE = "schematron.failed_assert"
SUCCESSFUL_REPORT_CODE = "schematron.successful_report"
DYNAMIC_ERROR_CODE = "schematron.dynamic_error"

MAX_CACHED_STYLESHEETS = 16
MAX_CACHED_CHARS = 64 * 1024 * 1024
# The longest engine message quoted in a finding or a configuration error.
MAX_QUOTED_CHARS = 1000

ResourceName = Annotated[str, StringConstraints(min_length=1)]


class SchematronConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # The resource file that holds the schema, or the validation stylesheet made from one.
    rules: ResourceName
    # Names or globs, which applying the workflow resolves into the step's resource files.
    resources: list[ResourceName] = []
    # A phase the schema defines, or "#ALL"; by default the schema's defaultPhase, else every pattern.
    phase: Annotated[str, StringConstraints(min_length=1)] | None = None


class EngineTimedOut(Exception):
    """The engine was still running when its time was up, and was killed."""


class EngineFailed(Exception):
    """The engine stopped without a result (a crash, a signal, memory); the message is for users."""


@dataclass(frozen=True)
class Report:
    """What the rules made of one document: its SVRL report, or the error that stopped them."""

    svrl: etree._Element | None
    error: str | None = None


@dataclass(frozen=True)
class Checked:
    """A validation's result, and the SVRL report it was read from (None when there was none)."""

    result: ValidationResult
    svrl: etree._Element | None


@dataclass(frozen=True)
class _Rules:
    uri: str
    path: Path  # the work folder's copy
    kind: Literal["schematron", "xslt"]
    phase: str
    catalog: Path
    digest: str


class SchematronValidator:
    id: ClassVar[str] = "schematron"
    type: ClassVar[str] = "schematron"
    version: ClassVar[str] = "1"
    # Inline, in a child process killed at the budget: see the module's notes for the measurements.
    mode: ClassVar[Literal["inline", "job"]] = "inline"
    config_model: ClassVar[type[BaseModel]] = SchematronConfig

    def validate(self, context: ValidationContext) -> ValidationResult:
        return check(context).result


def check(context: ValidationContext) -> Checked:
    """Validate the step's submission, keeping the SVRL report beside the result."""
    config = parse_config(SchematronValidator(), context.inputs)
    assert isinstance(config, SchematronConfig)
    primary = context.primary()
    role = primary.ref.role
    try:
        document = parse_untrusted(primary.path, what=primary.ref.name)
    except UnsafeXml as exc:
        return Checked(ValidationResult(messages=[exc.as_message(role)]), None)
    context.check_budget()
    try:
        [report] = run_schematron(
            config, context.resources, [(primary.ref.name, document)], context.workdir, _seconds(context)
        )
    except EngineTimedOut:
        # Past the inline budget this raises OverBudget, and a job takes the step over.
        context.check_budget()
        return Checked(
            ValidationResult(
                runtime_error=f"the Schematron validation did not finish within the step's {context.timeout_seconds} s "
                "timeout and was stopped",
                timed_out=True,
            ),
            None,
        )
    except EngineFailed as exc:
        return Checked(ValidationResult(runtime_error=str(exc)), None)
    if report.svrl is None:
        return Checked(ValidationResult(messages=[_dynamic_error(report.error or "", role)]), None)
    messages, metrics = findings(report.svrl, role)
    return Checked(ValidationResult(messages=messages, metrics=metrics), report.svrl)


def _seconds(context: ValidationContext) -> float:
    """What the engine may use: the step's time left, and inline no more than the budget left."""
    seconds = context.seconds_left()
    if context.budget_deadline is not None:
        seconds = min(seconds, context.budget_deadline - time.monotonic())
    return seconds


def run_schematron(
    config: SchematronConfig,
    resources: Mapping[str, Path],
    documents: Sequence[tuple[str, etree._ElementTree]],
    workdir: Path,
    seconds: float,
) -> list[Report]:
    """Each document's report, from one run of the engine: the stylesheet is compiled once for all of them.

    `documents` are (file name, tree) pairs, parsed with `parse_untrusted`. Raises ConfigError when the rules cannot
    be used, EngineTimedOut past `seconds`, EngineFailed when the engine stopped without a result.
    """
    rules = _prepare_rules(config, resources, workdir)
    stylesheet = workdir / "validation.xsl"
    transpile = False
    if rules.kind == "schematron":
        cached = _cached_stylesheet(rules.digest)
        if cached is None:
            transpile = True
        else:
            stylesheet.write_text(cached, encoding="utf-8")
    (workdir / "documents").mkdir()
    entries = []
    for index, (name, tree) in enumerate(documents):
        path = workdir / "documents" / f"{index}.xml"
        # As UTF-8, whatever it was: the engine hands Saxon text, not bytes.
        tree.write(str(path), encoding="UTF-8", xml_declaration=True)
        entries.append({"uri": SUBMISSION_BASE_URI + quote(name), "path": str(path), "svrl": f"{path}.svrl"})
    outcome_path = workdir / "outcome.json"
    request = {
        "catalog": str(rules.catalog),
        "rules": {"uri": rules.uri, "path": str(rules.path), "kind": rules.kind},
        "transpiler": str(TRANSPILER) if transpile else None,
        "phase": rules.phase,
        "stylesheet": str(stylesheet),
        "documents": entries,
        "outcome": str(outcome_path),
    }
    request_path = workdir / "request.json"
    request_path.write_text(json.dumps(request), encoding="utf-8")
    engine_log = workdir / "engine.log"
    argv = [sys.executable, "-m", "jobs.validators.schematron", str(request_path)]
    completed = run_isolated(argv, workdir, seconds, engine_log)
    if completed.timed_out:
        raise EngineTimedOut()
    if not outcome_path.is_file():
        log.warning("the Schematron engine ended with status %s: %s", completed.returncode, _tail(engine_log))
        why = f"it was killed by {completed.killed_by}" if completed.killed_by else f"status {completed.returncode}"
        raise EngineFailed(f"the Schematron engine stopped without a result ({why}); operators have its log")
    outcome = json.loads(outcome_path.read_text(encoding="utf-8"))
    if "failed" in outcome:
        stage = "transpiled" if outcome["failed"] == "transpile" else "compiled"
        raise ConfigError(f"the rules {config.rules!r} could not be {stage}: {outcome['message']}")
    if transpile:
        _remember_stylesheet(rules.digest, stylesheet)
    return [_report(config.rules, entry, result) for entry, result in zip(entries, outcome["documents"], strict=True)]


def _report(rules: str, entry: dict[str, str], result: dict[str, str | None]) -> Report:
    if result["error"] is not None:
        return Report(None, result["error"])
    try:
        svrl = parse_untrusted(Path(entry["svrl"]), what="their output").getroot()
    except UnsafeXml as exc:
        raise ConfigError(f"the rules {rules!r} did not make an SVRL report: {exc.text}") from exc
    # A stylesheet that makes anything else would pass every document.
    if svrl.tag != f"{{{SVRL_NS}}}schematron-output":
        raise ConfigError(f"the rules {rules!r} did not make an SVRL report: their output is a {svrl.tag} element")
    return Report(svrl)


def _tail(path: Path, limit: int = 2000) -> str:
    return path.read_text(encoding="utf-8", errors="replace")[-limit:] if path.is_file() else "(no log)"


# -- The rules and their resource files, as the engine reads them ---------------------------------------------


def _prepare_rules(config: SchematronConfig, resources: Mapping[str, Path], workdir: Path) -> _Rules:
    """Copy the resource files where the engine reads them, map their URIs in a catalog, and check the rules."""
    if config.rules not in resources:
        raise ConfigError(f"the rules {config.rules!r} are not one of the step's resource files")
    folder = workdir / "resources"
    digest = hashlib.sha256(json.dumps([_transpiler_sha256(), config.rules, config.phase]).encode())
    catalog = etree.Element(f"{{{CATALOG_NS}}}catalog", nsmap={None: CATALOG_NS})
    phases: set[str] = set()
    rules_root: etree._Element | None = None
    rules_problem = ""
    for name, source in sorted(resources.items()):
        copy = folder / _relative(name)
        copy.parent.mkdir(parents=True, exist_ok=True)
        uri = RESOURCE_BASE_URI + quote(name)
        with source.open("rb") as file:
            digest.update(json.dumps([name, hashlib.file_digest(file, "sha256").hexdigest()]).encode())
        try:
            tree = parse_untrusted(source, what=f"the resource file {name!r}")
        except UnsafeXml as exc:
            if exc.code != "xml.malformed":
                raise ConfigError(exc.text) from exc
            # Not XML: text for unparsed-text(), say, which the engine reads as it is.
            shutil.copyfile(source, copy)
            if name == config.rules:
                rules_problem = exc.text
        else:
            root = tree.getroot()
            if root.get(XML_BASE) is None:
                root.set(XML_BASE, uri)
            tree.write(str(copy), encoding="UTF-8", xml_declaration=True)
            phases.update(p.get("id") for p in tree.iter(f"{{{SCH_NS}}}phase") if p.get("id"))
            if name == config.rules:
                rules_root = root
        etree.SubElement(catalog, f"{{{CATALOG_NS}}}uri", name=uri, uri=copy.resolve().as_uri())
    if rules_root is None:
        raise ConfigError(f"the rules {config.rules!r} are not XML: {rules_problem}")
    catalog_path = workdir / "catalog.xml"
    etree.ElementTree(catalog).write(str(catalog_path), encoding="UTF-8", xml_declaration=True)
    kind = _kind(config, rules_root)
    return _Rules(
        uri=RESOURCE_BASE_URI + quote(config.rules),
        path=folder / _relative(config.rules),
        kind=kind,
        phase=_phase(config, rules_root, phases) if kind == "schematron" else "#ALL",
        catalog=catalog_path,
        digest=digest.hexdigest(),
    )


def _relative(name: str) -> PurePosixPath:
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise ConfigError(f"the resource file name {name!r} is not a relative path")
    return path


def _kind(config: SchematronConfig, root: etree._Element) -> Literal["schematron", "xslt"]:
    name = etree.QName(root)
    if (name.namespace, name.localname) == (SCH_NS, "schema"):
        binding = root.get("queryBinding")
        if binding is not None and binding.strip().lower() not in QUERY_BINDINGS:
            raise ConfigError(
                f"the rules {config.rules!r} use the query binding {binding!r}; the XSLT 2/3 binding runs them "
                f"(queryBinding absent or one of {', '.join(sorted(QUERY_BINDINGS))})"
            )
        return "schematron"
    if name.namespace == XSL_NS and name.localname in ("stylesheet", "transform"):
        if config.phase is not None:
            raise ConfigError(
                f"the rules {config.rules!r} are a validation stylesheet, whose phase was chosen when it was made: "
                "phase applies to a Schematron schema"
            )
        return "xslt"
    if name.namespace == SCHEMATRON_1_5_NS:
        raise ConfigError(f"the rules {config.rules!r} are Schematron 1.5; ISO Schematron ({SCH_NS}) is supported")
    raise ConfigError(
        f"the rules {config.rules!r} are neither an ISO Schematron schema nor an XSLT stylesheet (the root element "
        f"is {root.tag})"
    )


def _phase(config: SchematronConfig, root: etree._Element, defined: set[str]) -> str:
    """The transpiler's phase. SchXslt2 takes a phase no schema defines for one without patterns, under which every
    document would pass: such a phase is refused instead."""
    known = ", ".join(sorted(defined)) or "none"
    if config.phase is None:
        default = root.get("defaultPhase")
        if default is not None and default not in defined | {"#ALL"}:
            raise ConfigError(f"the rules' defaultPhase {default!r} is not a phase they define (phases: {known})")
        return "#DEFAULT"
    if config.phase not in defined | {"#ALL", "#DEFAULT"}:
        raise ConfigError(f"the phase {config.phase!r} is not one the rules define (phases: {known})")
    return config.phase


@cache
def _transpiler_sha256() -> str:
    return hashlib.sha256(TRANSPILER.read_bytes()).hexdigest()


# -- Transpiled stylesheets, remembered by digest ----------------------------------------------------------------

_stylesheets: OrderedDict[str, str] = OrderedDict()
_stylesheets_lock = threading.Lock()


def _cached_stylesheet(digest: str) -> str | None:
    with _stylesheets_lock:
        if digest in _stylesheets:
            _stylesheets.move_to_end(digest)
        return _stylesheets.get(digest)


def _remember_stylesheet(digest: str, path: Path) -> None:
    if not path.is_file() or path.stat().st_size > MAX_CACHED_CHARS:
        return
    text = path.read_text(encoding="utf-8")
    with _stylesheets_lock:
        _stylesheets[digest] = text
        while len(_stylesheets) > MAX_CACHED_STYLESHEETS or sum(map(len, _stylesheets.values())) > MAX_CACHED_CHARS:
            _stylesheets.popitem(last=False)


# -- Findings -----------------------------------------------------------------------------------------------


def findings(svrl: etree._Element, role: str) -> tuple[list[Message], list[Metric]]:
    """One finding per failed assert, successful report and dynamic error, in the report's order, and the counts."""
    messages: list[Message] = []
    counts = {"failed_asserts": 0, "successful_reports": 0, "fired_rules": 0}
    rule_id: str | None = None
    for element in _svrl_events(svrl):
        kind = etree.QName(element).localname
        if kind == "fired-rule":
            counts["fired_rules"] += 1
            rule_id = element.get("id")
        elif kind == "failed-assert":
            counts["failed_asserts"] += 1
            messages.append(_finding(element, role, rule_id, FAILED_ASSERT_CODE, Severity.ERROR))
        elif kind == "successful-report":
            counts["successful_reports"] += 1
            messages.append(_finding(element, role, rule_id, SUCCESSFUL_REPORT_CODE, Severity.INFO))
        else:
            code = element.get("code")
            messages.append(_dynamic_error(f"{code}: {_text(element)}" if code else _text(element), role))
    metrics = [Metric(name=name, value=value, unit="count") for name, value in counts.items()]
    return messages, metrics


def _svrl_events(svrl: etree._Element) -> Iterator[etree._Element]:
    tags = [f"{{{SVRL_NS}}}{name}" for name in ("fired-rule", "failed-assert", "successful-report", "error")]
    return svrl.iter(*tags)


def _finding(element: etree._Element, role: str, rule_id: str | None, generic_code: str, default: Severity) -> Message:
    text = _text(element.find(f"{{{SVRL_NS}}}text"))
    diagnostics = [_text(d) for d in element.iterfind(f"{{{SVRL_NS}}}diagnostic-reference/{{{SVRL_NS}}}text")]
    if not text:
        verb = "failed" if generic_code == FAILED_ASSERT_CODE else "reported"
        text = f"the test {element.get('test', '')!r} {verb}"
    if diagnostics := [d for d in diagnostics if d]:
        text = f"{text} ({'; '.join(diagnostics)})"
    return Message(
        severity=_severity(element, default),
        code=element.get("id") or rule_id or generic_code,
        text=text,
        location=Location(file_role=role, path=element.get("location")),
    )


def _severity(element: etree._Element, default: Severity) -> Severity:
    for attribute in ("flag", "role"):
        value = (element.get(attribute) or "").strip().lower()
        if value in SEVERITIES:
            return SEVERITIES[value]
    return default


def _text(element: etree._Element | None) -> str:
    return " ".join("".join(element.itertext()).split()) if element is not None else ""


def _dynamic_error(description: str, role: str) -> Message:
    return Message(
        severity=Severity.ERROR,
        code=DYNAMIC_ERROR_CODE,
        text=f"the rules stopped with an error, so the document was not fully validated: {_quoted(description)}",
        location=Location(file_role=role),
    )


def _quoted(message: str) -> str:
    """An engine's message, on one line and bounded, saying in users' words why a `validibot:` URI was not read."""
    message = " ".join(message.split())
    for pattern, replacement in _UNMAPPED_URI:
        message = pattern.sub(replacement, message)
    return message if len(message) <= MAX_QUOTED_CHARS else message[: MAX_QUOTED_CHARS - 1] + "…"


# What Saxon's native build says of a `validibot:` URI the catalog does not map, which no handler can fetch.
_NOT_A_RESOURCE = " (not one of the step's resource files)"
_UNMAPPED_URI = [
    (
        re.compile(
            r"[\s.]*\(?(?:Caused by java\.net\.MalformedURLException: )?Accessing a URL protocol that was not "
            r"enabled\..*?native-image command\.\)?"
        ),
        _NOT_A_RESOURCE,
    ),
    (
        re.compile(rf"I/O error reported by XML parser processing ({RESOURCE_SCHEME}:[^\s]*?)\.?(?=\s|$)"),
        rf"cannot read \1{_NOT_A_RESOURCE}",
    ),
]


# -- The engine: the child process that runs Saxon ------------------------------------------------------------


def _engine(request: dict[str, Any]) -> dict[str, Any]:
    """Transpile (unless the request brings the stylesheet), compile, and validate each document into its SVRL."""
    # Imported here, in the child only: the service process never loads Saxon.
    from saxonche import PySaxonApiError, PySaxonProcessor

    with PySaxonProcessor(license=False) as processor:
        # Set before the protocols are restricted, which setting it afterwards trips over.
        processor.set_catalog_files([request["catalog"]])
        processor.set_configuration_property(ALLOWED_PROTOCOLS, RESOURCE_SCHEME)
        processor.set_configuration_property(ALLOW_EXTERNAL_FUNCTIONS, "false")
        builder = processor.new_document_builder()
        rules = request["rules"]
        stylesheet = Path(request["stylesheet"])

        def parse(path: Path, uri: str) -> Any:
            builder.set_base_uri(uri)
            return builder.parse_xml(xml_text=path.read_text(encoding="utf-8"))

        if request["transpiler"] is not None:
            compiler = processor.new_xslt30_processor()
            # Static: a dynamic error in the rules becomes an svrl:error in the report rather than ending the run.
            compiler.set_parameter(
                f"{{{SCHXSLT_NS}}}terminate-validation-on-error", processor.make_boolean_value(False)
            )
            transpiler = compiler.compile_stylesheet(
                stylesheet_text=Path(request["transpiler"]).read_text(encoding="utf-8")
            )
            transpiler.set_parameter(f"{{{SCHXSLT_NS}}}phase", processor.make_string_value(request["phase"]))
            transpiler.set_save_xsl_message(True)
            try:
                text = transpiler.transform_to_string(xdm_node=parse(Path(rules["path"]), rules["uri"]))
            except PySaxonApiError as exc:
                said = transpiler.get_xsl_messages()
                return {"failed": "transpile", "message": _quoted(" ".join(map(str, said)) if said else str(exc))}
            stylesheet.write_text(text, encoding="utf-8")
        elif rules["kind"] == "xslt":
            stylesheet = Path(rules["path"])
        try:
            executable = processor.new_xslt30_processor().compile_stylesheet(
                stylesheet_node=parse(stylesheet, rules["uri"])
            )
        except PySaxonApiError as exc:
            return {"failed": "compile", "message": _quoted(str(exc))}
        results = []
        for document in request["documents"]:
            try:
                svrl = executable.transform_to_string(xdm_node=parse(Path(document["path"]), document["uri"]))
            except PySaxonApiError as exc:
                results.append({"error": _quoted(str(exc))})
                continue
            Path(document["svrl"]).write_text(svrl, encoding="utf-8")
            results.append({"error": None})
        return {"documents": results}


def _main(request_path: Path) -> None:
    request = json.loads(request_path.read_text(encoding="utf-8"))
    Path(request["outcome"]).write_text(json.dumps(_engine(request)), encoding="utf-8")


if __name__ == "__main__":
    _main(Path(sys.argv[1]))
