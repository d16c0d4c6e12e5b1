"""SHACL validation (pyshacl over rdflib): the submission is an RDF data graph, checked against the step's shapes.

The data graph is Turtle, N-Triples, JSON-LD or RDF/XML, as `data_format` says or else as its file name's extension
does (SYNTAX_BY_EXTENSION). The shapes graph is the resource file `shapes` with every other resource file of the step
merged in; the RDFS and OWL axioms of those other files (class hierarchies, property definitions) are also copied into
the data graph before it is validated, because SHACL reads `rdfs:subClassOf` (`sh:class`, `sh:targetClass`) from the
data graph only. `inference` runs RDFS or OWL RL inference over the data graph first. SHACL Core and SHACL-SPARQL
constraints are checked; SHACL Advanced Features (rules, custom targets) and SHACL-JS are not.

One finding per validation result, coded `shacl.` and its constraint component's local name, with the result's
severity (Violation: ERROR, Warning: WARNING, Info: INFO, any other severity: ERROR), its message, and a location that
names the focus node and the result path. Metrics: `conforms` (1 or 0; a report of warnings or infos only does not
conform but fails no step), `violations`, `warnings`, `infos`, and `triples` (the data graph's, as parsed).

Nothing is fetched and no file is read but the step's own: a JSON-LD `@context` or `@import` that names a document is
refused before the parser would load it; RDF/XML is read through xml_safety first, so a document type declaration
(and with it every entity) is refused; `owl:imports` is not followed; pyshacl refuses a SPARQL constraint's SERVICE,
and a FROM clause loads nothing into a data graph that is not a dataset. Whatever still tries is stopped by an audit
hook while this validator parses and validates: no connection, no URL opened, no file opened but Python's own (its
installation and import path, which lazy imports read).

pyshacl has no time limit of its own: the data graph's store checks the clock as the engine reads it, so an inline run
past its budget is handed to a job, and a run past its step's timeout stops.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import quote
from xml.sax import SAXParseException

from pydantic import BaseModel, ConfigDict, StringConstraints
from pyshacl import Validator as ShaclEngine
from pyshacl.errors import ReportableRuntimeError
from pyshacl.graph_abstraction import DataGraph
from rdflib import RDF, SH, BNode, Graph, Node, URIRef
from rdflib import Literal as RdfLiteral
from rdflib.namespace import NamespaceManager
from rdflib.plugins.parsers.notation3 import BadSyntax
from rdflib.plugins.stores.memory import Memory

from jobs.validators.base import ConfigError, OverBudget, ValidationContext, ValidationResult, parse_config
from jobs.validators.xml_safety import UnsafeXml, parse_untrusted
from schemas.enums import Severity
from schemas.envelopes import Location, Message, Metric

log = logging.getLogger(__name__)
# rdflib logs a traceback at WARNING for each literal its datatype does not allow: in a submission that is a finding
# (sh:datatype), not news for operators, and a large submission of them would flood the log.
logging.getLogger("rdflib.term").setLevel(logging.ERROR)

RdfSyntax = Literal["turtle", "nt", "json-ld", "xml"]
SYNTAX_BY_EXTENSION: dict[str, RdfSyntax] = {
    ".ttl": "turtle",
    ".nt": "nt",
    ".jsonld": "json-ld",
    ".json": "json-ld",
    ".rdf": "xml",
    ".owl": "xml",
    ".xml": "xml",
}
SYNTAX_NAMES: dict[RdfSyntax, str] = {"turtle": "Turtle", "nt": "N-Triples", "json-ld": "JSON-LD", "xml": "RDF/XML"}

SEVERITIES = {SH.Violation: Severity.ERROR, SH.Warning: Severity.WARNING, SH.Info: Severity.INFO}

# Relative IRIs in a file resolve against its name under this base: never the file system path it was downloaded to,
# which would leak into findings. Under .invalid (RFC 2606), a name that resolves nowhere.
DOCUMENT_BASE_URI = "https://validibot.invalid/"

MAX_MESSAGE_CHARS = 500
# How much of a focus node or value a finding quotes: a literal may be a whole document.
QUOTED_VALUE_CHARS = 80
# How many store operations pass between looks at the clock: each costs a call and a clock read.
CLOCK_CHECK_INTERVAL = 256
# A finding's location elides property paths nested deeper than this.
MAX_PATH_DEPTH = 12

ResourceName = Annotated[str, StringConstraints(min_length=1)]


class ShaclConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # The resource file that holds the shapes graph.
    shapes: ResourceName
    # Names or globs, which applying the workflow resolves into the step's resource files: more shapes and ontologies.
    resources: list[ResourceName] = []
    data_format: RdfSyntax | None = None
    inference: Literal["none", "rdfs", "owlrl"] = "none"


# -- Nothing leaves the step: an audit hook refuses the network and foreign files while this validator runs -----------

# The refusals of the validation running in this context, or None outside one (other threads, other validators).
_refusals: ContextVar[list[str] | None] = ContextVar("shacl_refusals", default=None)

_NETWORK_EVENTS = frozenset(
    {
        "urllib.Request",
        "http.client.connect",
        "socket.connect",
        "socket.getaddrinfo",
        "socket.gethostbyname",
        "socket.gethostbyaddr",
        "socket.sendto",
    }
)


def _is_python_code(path: str) -> bool:
    """Whether `path` is in Python's installation or on its import path, which lazy imports read: pyshacl, rdflib and
    owlrl import parts of themselves when first used. Asked only of files opened inside _sealed(), which are few."""
    roots = (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, *filter(os.path.isabs, sys.path))
    return path.startswith(tuple(os.path.join(os.path.realpath(root), "") for root in roots))


class _Refused(BaseException):
    """Raised by the audit hook. A BaseException, because rdflib catches Exception in places (loading a SPARQL FROM
    graph into a dataset, it tries the next syntax); whatever swallows it anyway, the refusal is recorded."""


def _refused_access(event: str, args: tuple[Any, ...]) -> str | None:
    """What `event` would reach outside the step, or None."""
    if event in _NETWORK_EVENTS:
        target = args[1] if event in ("socket.connect", "socket.sendto", "http.client.connect") else args[0]
        return f"the network ({target!r})"
    if event == "open" and not isinstance(args[0], int):
        path = os.path.realpath(os.fsdecode(args[0]))
        if not _is_python_code(path):
            return f"the file {path!r}"
    return None


def _audit(event: str, args: tuple[Any, ...]) -> None:
    # Every audited event of the process comes here, in every thread: the common case returns at once.
    refusals = _refusals.get()
    if refusals is None:
        return
    refused = _refused_access(event, args)
    if refused is not None:
        refusals.append(refused)
        raise _Refused(refused)


# Audit hooks cannot be removed: this one does nothing outside _sealed().
sys.addaudithook(_audit)


@contextmanager
def _sealed() -> Iterator[list[str]]:
    """While inside, the network and files outside Python's own are refused in this context; yields the refusals."""
    refusals: list[str] = []
    token = _refusals.set(refusals)
    try:
        yield refusals
    finally:
        _refusals.reset(token)


# -- Time: the engine's reads of the data graph look at the clock ----------------------------------------------------


class _OutOfTime(BaseException):
    """Raised from inside the engine when time is up. A BaseException, because pyshacl catches Exception around some
    constraints and would carry on with a verdict made of what it had read so far."""

    def __init__(self, over_budget: bool) -> None:
        super().__init__()
        self.over_budget = over_budget


def _clock(context: ValidationContext) -> Callable[[], None]:
    def check() -> None:
        try:
            context.check_budget()
        except OverBudget as exc:
            raise _OutOfTime(over_budget=True) from exc
        if context.seconds_left() <= 0:
            raise _OutOfTime(over_budget=False)

    return check


class _TimedMemory(Memory):
    """rdflib's in-memory store, looking at the clock every CLOCK_CHECK_INTERVAL reads and writes: parsing, inference
    and every constraint go through it. It adds about a tenth to the parsing time and a few hundredths to validating."""

    def __init__(self, check: Callable[[], None]) -> None:
        super().__init__()
        self._check = check
        self._countdown = CLOCK_CHECK_INTERVAL

    def _tick(self) -> None:
        self._countdown -= 1
        if not self._countdown:
            self._countdown = CLOCK_CHECK_INTERVAL
            self._check()

    def add(self, triple: Any, context: Any, quoted: bool = False) -> None:
        self._tick()
        Memory.add(self, triple, context, quoted)

    def triples(self, triple_pattern: Any, context: Any = None) -> Any:
        self._tick()
        return Memory.triples(self, triple_pattern, context)


# -- Reading RDF -------------------------------------------------------------------------------------------------------


@dataclass
class _Unreadable(Exception):
    """A file that is not RDF of its syntax, or that is refused; the submission's is an ERROR finding."""

    code: str
    text: str
    line: int | None = None
    column: int | None = None

    def as_message(self, file_role: str) -> Message:
        location = Location(file_role=file_role, line=self.line, column=self.column)
        return Message(severity=Severity.ERROR, code=self.code, text=_clip(self.text), location=location)


def _clip(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def syntax_of(name: str, configured: RdfSyntax | None = None) -> RdfSyntax | None:
    return configured or SYNTAX_BY_EXTENSION.get(Path(name).suffix.lower())


def _document_reference(document: Any) -> str | None:
    """The first context a JSON-LD document loads from elsewhere (a URL, a relative name, an `@import`), or None.

    Walked without recursion, so that the depth the JSON parser allowed cannot overflow the stack here; every
    `@context` is looked at wherever it is, scoped contexts in term definitions included.
    """
    pending = [document]
    while pending:
        node = pending.pop()
        if isinstance(node, list):
            pending.extend(node)
        elif isinstance(node, dict):
            if "@context" in node:
                context = node["@context"]
                for entry in context if isinstance(context, list) else [context]:
                    if isinstance(entry, str):
                        return entry
                    if isinstance(entry, dict) and "@import" in entry:
                        return str(entry["@import"])
            pending.extend(node.values())
    return None


def _check_json_ld(data: bytes, name: str) -> None:
    """Refuse a JSON-LD document that loads a context from elsewhere, before rdflib would fetch it."""
    try:
        document = json.loads(data)
    except json.JSONDecodeError as exc:
        raise _Unreadable("rdf.syntax", f"{name} is not valid JSON-LD: {exc.msg}", exc.lineno, exc.colno) from exc
    except RecursionError as exc:
        raise _Unreadable("rdf.depth", f"{name} nests too deeply to read") from exc
    except ValueError as exc:  # not UTF-8, UTF-16 or UTF-32, or an integer past Python's digit limit
        raise _Unreadable("rdf.syntax", f"{name} is not valid JSON-LD: {exc}") from exc
    reference = _document_reference(document)
    if reference is not None:
        raise _Unreadable(
            "jsonld.remote_context",
            f"{name} loads its JSON-LD context from {reference!r}; contexts must be inline, as nothing is fetched",
        )


def _parse_error_position(exc: Exception) -> tuple[int | None, int | None]:
    if isinstance(exc, BadSyntax):
        return exc.lines + 1, None
    if isinstance(exc, SAXParseException):
        return exc.getLineNumber(), exc.getColumnNumber()
    return None, None


def _parse_error_reason(exc: Exception) -> str:
    if isinstance(exc, BadSyntax):
        # Its own text quotes the bytes around the error as Python's repr of bytes, over several lines.
        return exc._why
    reason = " ".join(str(exc).split()) or type(exc).__name__
    return _clip(reason, MAX_MESSAGE_CHARS - 100)


def _merge_named_graphs(graph: Graph) -> None:
    """JSON-LD may put triples in named graphs, which rdflib keeps in the store beside the graph it parses into. SHACL
    validates one graph: the data graph is their union, as pyshacl validates a dataset."""
    for named in list(graph.store.contexts()):
        if named.identifier != graph.identifier:
            graph.addN((s, p, o, graph) for s, p, o in named)


def read_graph(graph: Graph, path: Path, name: str, syntax: RdfSyntax) -> None:
    """Parse `path` into `graph`; _Unreadable if it is not RDF of `syntax`, or is refused."""
    if syntax == "xml":
        try:
            parse_untrusted(path, what=name)
        except UnsafeXml as exc:
            raise _Unreadable(exc.code, exc.text, exc.line, exc.column) from exc
    data = path.read_bytes()
    if syntax == "json-ld":
        _check_json_ld(data, name)
    refusals: list[str] = []
    try:
        with _sealed() as refusals:
            graph.parse(data=data, format=syntax, publicID=DOCUMENT_BASE_URI + quote(name))
    except _Refused:
        pass  # recorded in refusals
    except RecursionError as exc:
        if not refusals:
            raise _Unreadable("rdf.depth", f"{name} nests too deeply to read") from exc
    # rdflib's parsers raise whatever their syntax's library raises (SyntaxError, SAX errors, ValueError, KeyError,
    # TypeError for JSON-LD of unexpected shapes): all of it is the file's.
    except Exception as exc:
        if not refusals:
            line, column = _parse_error_position(exc)
            reason = _parse_error_reason(exc)
            raise _Unreadable(
                "rdf.syntax", f"{name} is not valid {SYNTAX_NAMES[syntax]}: {reason}", line, column
            ) from exc
    # Also when the refusal was swallowed on its way up, and the parser failed of it or carried on without.
    if refusals:
        raise _Unreadable("rdf.external_reference", f"{name} refers to {refusals[0]}, which is not read")
    if syntax == "json-ld":
        _merge_named_graphs(graph)


def _new_graph(store: Memory | None = None) -> Graph:
    # Only the core prefixes are known beyond a document's own, so that findings use the document's own names. (Not
    # `store or`: an empty store is false.)
    return Graph(store=Memory() if store is None else store, bind_namespaces="core")


def _read_resource(graph: Graph, path: Path, name: str) -> None:
    syntax = syntax_of(name)
    if syntax is None:
        known = ", ".join(sorted(SYNTAX_BY_EXTENSION))
        raise ConfigError(f"the RDF syntax of the resource file {name!r} is not known by its extension ({known})")
    try:
        read_graph(graph, path, name, syntax)
    except _Unreadable as exc:
        raise ConfigError(f"the resource file {name!r} cannot be used: {exc.text}") from exc


# -- The report --------------------------------------------------------------------------------------------------------


def _render(term: Node, names: NamespaceManager) -> str:
    if isinstance(term, URIRef | RdfLiteral):
        return term.n3(names)
    return f"_:{term}"


def _quoted(term: Node, names: NamespaceManager) -> str:
    return _clip(_render(term, names), QUOTED_VALUE_CHARS)


def render_path(report: Graph, path: Node, names: NamespaceManager, depth: int = 0) -> str:
    """A SHACL property path as SPARQL writes it: `ex:a/^ex:b`, `(ex:a|ex:b)*`."""
    if not isinstance(path, BNode):
        return _render(path, names)
    if depth >= MAX_PATH_DEPTH:
        return "…"

    def operand(node: Node) -> str:
        rendered = render_path(report, node, names, depth + 1)
        # Only sequences and alternatives bind more loosely than the operators around them.
        loose = report.value(node, RDF.first) is not None or report.value(node, SH.alternativePath) is not None
        return f"({rendered})" if loose else rendered

    if report.value(path, RDF.first) is not None:
        return "/".join(operand(step) for step in report.items(path))
    for predicate, suffix in ((SH.zeroOrMorePath, "*"), (SH.oneOrMorePath, "+"), (SH.zeroOrOnePath, "?")):
        if (inner := report.value(path, predicate)) is not None:
            return operand(inner) + suffix
    if (inner := report.value(path, SH.inversePath)) is not None:
        return "^" + operand(inner)
    if (alternatives := report.value(path, SH.alternativePath)) is not None:
        return "|".join(operand(step) for step in report.items(alternatives))
    return _render(path, names)


def _result_message(report: Graph, result: Node) -> str | None:
    """The result's sh:resultMessage: the untagged one, else the English one, else any."""
    messages = [m for m in report.objects(result, SH.resultMessage) if isinstance(m, RdfLiteral)]
    for wanted in (None, "en"):
        for message in messages:
            if message.language == wanted:
                return str(message)
    return str(messages[0]) if messages else None


@dataclass(frozen=True)
class _Finding:
    severity: Severity
    code: str
    text: str
    location: str


def _finding(report: Graph, result: Node, data_names: NamespaceManager, shape_names: NamespaceManager) -> _Finding:
    component = report.value(result, SH.sourceConstraintComponent)
    component_name = _local_name(component) if isinstance(component, URIRef) else "UnknownConstraintComponent"
    severity = SEVERITIES.get(report.value(result, SH.resultSeverity), Severity.ERROR)  # type: ignore[arg-type]
    focus = report.value(result, SH.focusNode)
    where = f"focus node {_quoted(focus, data_names)}" if focus is not None else "the data graph"
    if (path := report.value(result, SH.resultPath)) is not None:
        where += f", path {render_path(report, path, shape_names)}"
    text = _result_message(report, result) or f"{component_name} is not satisfied"
    if (value := report.value(result, SH.value)) is not None:
        quoted = _quoted(value, data_names)
        if quoted not in text:
            text += f" (value: {quoted})"
    return _Finding(severity, f"shacl.{component_name}", _clip(text), where)


def _local_name(iri: URIRef) -> str:
    for separator in ("#", "/"):
        if separator in iri:
            return iri.rsplit(separator, 1)[1] or str(iri)
    return str(iri)


def _report(conforms: bool, report: Graph, data: Graph, shapes: Graph, triples: int, role: str) -> ValidationResult:
    findings = sorted(
        (
            _finding(report, result, data.namespace_manager, shapes.namespace_manager)
            for report_node in report.subjects(RDF.type, SH.ValidationReport)
            for result in report.objects(report_node, SH.result)
        ),
        key=lambda f: (f.location, f.code, f.text),
    )
    counts = Counter(f.severity for f in findings)
    return ValidationResult(
        messages=[
            Message(severity=f.severity, code=f.code, text=f.text, location=Location(file_role=role, path=f.location))
            for f in findings
        ],
        metrics=[
            Metric(name="conforms", value=1 if conforms else 0),
            Metric(name="violations", value=counts[Severity.ERROR], unit="count"),
            Metric(name="warnings", value=counts[Severity.WARNING], unit="count"),
            Metric(name="infos", value=counts[Severity.INFO], unit="count"),
            Metric(name="triples", value=triples, unit="count"),
        ],
    )


# -- The validator -----------------------------------------------------------------------------------------------------


class ShaclValidator:
    id: ClassVar[str] = "shacl"
    type: ClassVar[str] = "shacl"
    version: ClassVar[str] = "1"
    mode: ClassVar[Literal["inline", "job"]] = "inline"
    config_model: ClassVar[type[BaseModel]] = ShaclConfig

    def validate(self, context: ValidationContext) -> ValidationResult:
        config = parse_config(self, context.inputs)
        assert isinstance(config, ShaclConfig)
        context.check_budget()
        try:
            return self._validate(config, context)
        except _OutOfTime as exc:
            if exc.over_budget:
                raise OverBudget("still validating when the inline time budget ran out") from None
            return ValidationResult(
                runtime_error=f"the SHACL validation did not finish within the step's {context.timeout_seconds} s "
                "timeout and was stopped",
                timed_out=True,
            )

    def _validate(self, config: ShaclConfig, context: ValidationContext) -> ValidationResult:
        if config.shapes not in context.resources:
            raise ConfigError(f"the shapes {config.shapes!r} are not one of the step's resource files")
        shapes = _new_graph()
        _read_resource(shapes, context.resources[config.shapes], config.shapes)
        ontology = _new_graph()
        for name in sorted(context.resources.keys() - {config.shapes}):
            _read_resource(ontology, context.resources[name], name)
        shapes += ontology

        primary = context.primary()
        role = primary.ref.role
        syntax = syntax_of(primary.ref.name, config.data_format)
        if syntax is None:
            return ValidationResult(
                messages=[
                    Message(
                        severity=Severity.ERROR,
                        code="rdf.unknown_format",
                        text=f"the RDF syntax of {primary.ref.name} is not known by its extension "
                        f"({', '.join(sorted(SYNTAX_BY_EXTENSION))}), and the step sets no data_format",
                        location=Location(file_role=role),
                    )
                ]
            )
        data = _new_graph(_TimedMemory(_clock(context)))
        try:
            read_graph(data, primary.path, primary.ref.name, syntax)
        except _Unreadable as exc:
            return ValidationResult(messages=[exc.as_message(role)])
        triples = len(data)
        context.check_budget()

        engine = ShaclEngine(
            DataGraph.from_rdflib(data),
            shacl_graph=shapes,
            ont_graph=ontology if len(ontology) else None,
            options={
                "inference": config.inference,
                # The data graph is this run's own: inference and ontology axioms go into it, not into a copy,
                # whose store would not look at the clock.
                "inplace": True,
                "advanced": False,
                "use_js": False,
                "logger": log,
            },
        )
        conforms, report = _run(engine)
        return _report(conforms, report, data, shapes, triples, role)


def _run(engine: ShaclEngine) -> tuple[bool, Graph]:
    """The engine's verdict and report; ConfigError for shapes it cannot use or that reach outside the step."""
    refusals: list[str] = []
    failure: ReportableRuntimeError | None = None
    try:
        with _sealed() as refusals:
            conforms, report, _ = engine.run()
    except _Refused:
        pass  # recorded in refusals
    except ReportableRuntimeError as exc:
        failure = exc
    # Also when the refusal was swallowed on its way up: the verdict would rest on a graph read in part.
    if refusals:
        raise ConfigError(f"the shapes tried to reach {refusals[0]}: nothing outside the step's files is read")
    if failure is not None:
        raise ConfigError(f"the shapes cannot be used: {_parse_error_reason(failure)}") from failure
    return conforms, report
