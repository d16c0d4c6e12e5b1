from __future__ import annotations

import dataclasses
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobs.registry import get_validator
from jobs.validators import shacl
from jobs.validators.base import ConfigError, InputFile, OverBudget, ValidationContext, ValidationResult
from jobs.validators.shacl import ShaclValidator
from schemas.enums import EnvelopeStatus, Severity
from schemas.envelopes import FileRef

PREFIXES = """\
@prefix ex: <http://example.org/> .
@prefix rdfs: <http://www.w3.org/2000/01/rdf-schema#> .
@prefix sh: <http://www.w3.org/ns/shacl#> .
@prefix xsd: <http://www.w3.org/2001/XMLSchema#> .
"""
PERSON_SHAPE = (
    PREFIXES
    + """
ex:PersonShape a sh:NodeShape ;
  sh:targetClass ex:Person ;
  sh:property [ sh:path ex:name ; sh:minCount 1 ; sh:datatype xsd:string ] ;
  sh:property [ sh:path ex:age ; sh:datatype xsd:integer ; sh:minInclusive 0 ] .
"""
)
# Ann conforms; Bob has no name and a negative age.
PEOPLE = (
    PREFIXES
    + """
ex:ann a ex:Person ; ex:name "Ann" ; ex:age 41 .
ex:bob a ex:Person ; ex:age -3 .
"""
)
BOB_FINDINGS = [
    (Severity.ERROR, "shacl.MinInclusiveConstraintComponent", "focus node ex:bob, path ex:age"),
    (Severity.ERROR, "shacl.MinCountConstraintComponent", "focus node ex:bob, path ex:name"),
]
# PEOPLE in the other syntaxes.
PEOPLE_NT = b"""\
<http://example.org/ann> <http://www.w3.org/1999/02/22-rdf-syntax-ns#type> <http://example.org/Person> .
<http://example.org/ann> <http://example.org/name> "Ann" .
<http://example.org/ann> <http://example.org/age> "41"^^<http://www.w3.org/2001/XMLSchema#integer> .
<http://example.org/bob> <http://www.w3.org/1999/02/22-rdf-syntax-ns#type> <http://example.org/Person> .
<http://example.org/bob> <http://example.org/age> "-3"^^<http://www.w3.org/2001/XMLSchema#integer> .
"""
PEOPLE_JSON_LD = {
    "@context": {"ex": "http://example.org/"},
    "@graph": [
        {"@id": "ex:ann", "@type": "ex:Person", "ex:name": "Ann", "ex:age": 41},
        {"@id": "ex:bob", "@type": "ex:Person", "ex:age": -3},
    ],
}
PEOPLE_XML = b"""<?xml version="1.0"?>
<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" xmlns:ex="http://example.org/">
  <ex:Person rdf:about="http://example.org/ann">
    <ex:name>Ann</ex:name>
    <ex:age rdf:datatype="http://www.w3.org/2001/XMLSchema#integer">41</ex:age>
  </ex:Person>
  <ex:Person rdf:about="http://example.org/bob">
    <ex:age rdf:datatype="http://www.w3.org/2001/XMLSchema#integer">-3</ex:age>
  </ex:Person>
</rdf:RDF>
"""


def context(
    tmp_path: Path,
    data: bytes | str,
    *,
    name: str = "data.ttl",
    shapes: bytes | str | None = PERSON_SHAPE,
    resource_files: dict[str, bytes | str] | None = None,
    context_class: type[ValidationContext] = ValidationContext,
    **config: object,
) -> ValidationContext:
    """The data as the submission `name`; `shapes` as the resource file shapes.ttl, and `resource_files` by name.
    `config` is the step's, but for `shapes`, which names shapes.ttl."""
    raw = data.encode() if isinstance(data, str) else data
    path = tmp_path / "submission" / name
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(raw)
    ref = FileRef(name=name, role="primary", uri=f"gs://b/{name}", size_bytes=len(raw), sha256="0" * 64)
    files = dict(resource_files or {})
    if shapes is not None:
        files["shapes.ttl"] = shapes
        config.setdefault("shapes", "shapes.ttl")
    stored = {}
    for resource, content in files.items():
        stored[resource] = tmp_path / "resources" / resource
        stored[resource].parent.mkdir(parents=True, exist_ok=True)
        stored[resource].write_bytes(content.encode() if isinstance(content, str) else content)
    return context_class(
        files=[InputFile(ref, path)],
        inputs=config,
        workdir=tmp_path,
        timeout_seconds=60,
        deadline=time.monotonic() + 60,
        resources=stored,
    )


def validate(tmp_path: Path, data: bytes | str, **kwargs: object) -> ValidationResult:
    return ShaclValidator().validate(context(tmp_path, data, **kwargs))  # type: ignore[arg-type]


def metrics(result: ValidationResult) -> dict[str, float]:
    return {metric.name: metric.value for metric in result.metrics}


def findings(result: ValidationResult) -> list[tuple[Severity, str, str | None]]:
    return [(m.severity, m.code, m.location.path if m.location else None) for m in result.messages]


def only_code(result: ValidationResult) -> str:
    assert len(result.messages) == 1, result.messages
    return result.messages[0].code


# -- Findings and metrics ----------------------------------------------------------------------------------------------


def test_a_conforming_graph_has_no_findings(tmp_path: Path) -> None:
    result = validate(tmp_path, PREFIXES + 'ex:ann a ex:Person ; ex:name "Ann" ; ex:age 41 .')
    assert result.messages == []
    assert result.status == EnvelopeStatus.SUCCESS
    assert metrics(result) == {"conforms": 1, "violations": 0, "warnings": 0, "infos": 0, "triples": 3}


def test_one_finding_per_validation_result(tmp_path: Path) -> None:
    result = validate(tmp_path, PEOPLE)
    assert findings(result) == BOB_FINDINGS
    assert result.status == EnvelopeStatus.FAILED_VALIDATION
    assert metrics(result) == {"conforms": 0, "violations": 2, "warnings": 0, "infos": 0, "triples": 5}
    assert all(m.location is not None and m.location.file_role == "primary" for m in result.messages)
    too_young, nameless = result.messages
    # pyshacl's own message, and the value when the message does not quote it.
    assert too_young.text.endswith('(value: "-3"^^xsd:integer)')
    assert nameless.text == "Less than 1 values on ex:bob->ex:name"


def test_severities_map_to_finding_severities(tmp_path: Path) -> None:
    shapes = (
        PREFIXES
        + """
ex:S a sh:NodeShape ; sh:targetNode ex:x ;
  sh:property [ sh:path ex:a ; sh:minCount 1 ; sh:severity sh:Violation ] ;
  sh:property [ sh:path ex:b ; sh:minCount 1 ; sh:severity sh:Warning ] ;
  sh:property [ sh:path ex:c ; sh:minCount 1 ; sh:severity sh:Info ] ;
  sh:property [ sh:path ex:d ; sh:minCount 1 ; sh:severity ex:Catastrophe ] .
"""
    )
    result = validate(tmp_path, PREFIXES + "ex:x ex:e 1 .", shapes=shapes)
    assert [(m.severity, m.location.path) for m in result.messages if m.location] == [
        (Severity.ERROR, "focus node ex:x, path ex:a"),
        (Severity.WARNING, "focus node ex:x, path ex:b"),
        (Severity.INFO, "focus node ex:x, path ex:c"),
        # A severity of the shapes' own making is as bad as a violation: the graph does not conform either way.
        (Severity.ERROR, "focus node ex:x, path ex:d"),
    ]
    assert metrics(result) == {"conforms": 0, "violations": 2, "warnings": 1, "infos": 1, "triples": 1}


def test_warnings_and_infos_alone_fail_no_step(tmp_path: Path) -> None:
    shapes = (
        PREFIXES
        + "ex:S a sh:NodeShape ; sh:targetNode ex:x ; sh:property [ sh:path ex:b ; sh:minCount 1 ; "
        + ("sh:severity sh:Warning ] .")
    )
    result = validate(tmp_path, PREFIXES + "ex:x ex:e 1 .", shapes=shapes)
    assert [m.severity for m in result.messages] == [Severity.WARNING]
    assert result.status == EnvelopeStatus.SUCCESS
    assert metrics(result)["conforms"] == 0


def test_the_shapes_own_message_is_the_finding_text(tmp_path: Path) -> None:
    shapes = (
        PREFIXES
        + """
ex:S a sh:NodeShape ; sh:targetClass ex:Person ;
  sh:property [ sh:path ex:name ; sh:minCount 1 ; sh:message "Un nom est requis"@fr, "A name is required"@en ] .
"""
    )
    result = validate(tmp_path, PREFIXES + "ex:bob a ex:Person .", shapes=shapes)
    assert [m.text for m in result.messages] == ["A name is required"]


def test_complex_paths_read_as_sparql_paths(tmp_path: Path) -> None:
    shapes = (
        PREFIXES
        + """
ex:S a sh:NodeShape ; sh:targetNode ex:x ;
  sh:property [ sh:path ( ex:a [ sh:zeroOrMorePath [ sh:alternativePath ( ex:b [ sh:inversePath ex:c ] ) ] ] ) ;
                sh:minCount 1 ] .
"""
    )
    result = validate(tmp_path, PREFIXES + "ex:x ex:e 1 .", shapes=shapes)
    assert findings(result) == [
        (Severity.ERROR, "shacl.MinCountConstraintComponent", "focus node ex:x, path ex:a/(ex:b|^ex:c)*")
    ]


def test_iris_without_a_prefix_are_written_whole(tmp_path: Path) -> None:
    result = validate(tmp_path, PEOPLE_NT, name="people.nt")
    assert [m.location.path for m in result.messages if m.location] == [
        # The data declares no prefix; the shapes do.
        "focus node <http://example.org/bob>, path ex:age",
        "focus node <http://example.org/bob>, path ex:name",
    ]


def test_a_long_value_is_quoted_in_part(tmp_path: Path) -> None:
    result = validate(tmp_path, PREFIXES + f'ex:bob a ex:Person ; ex:name "Bob" ; ex:age "{"9" * 5000}" .')
    assert [m.code for m in result.messages] == [
        "shacl.DatatypeConstraintComponent",
        "shacl.MinInclusiveConstraintComponent",
    ]
    for finding in result.messages:
        assert len(finding.text) < 200
        assert finding.text.endswith(f'(value: "{"9" * (shacl.QUOTED_VALUE_CHARS - 2)}…)')


# -- Syntaxes ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("people.ttl", PEOPLE.encode()),
        ("people.nt", PEOPLE_NT),
        ("people.jsonld", json.dumps(PEOPLE_JSON_LD).encode()),
        ("people.json", json.dumps(PEOPLE_JSON_LD).encode()),
        ("people.rdf", PEOPLE_XML),
        ("people.owl", PEOPLE_XML),
        ("PEOPLE.XML", PEOPLE_XML),
    ],
)
def test_every_syntax_by_its_extension(tmp_path: Path, name: str, data: bytes) -> None:
    result = validate(tmp_path, data, name=name)
    assert [code for _, code, _ in findings(result)] == [code for _, code, _ in BOB_FINDINGS]
    assert metrics(result)["triples"] == 5


def test_data_format_overrides_the_extension(tmp_path: Path) -> None:
    result = validate(tmp_path, PEOPLE_NT, name="people.txt", data_format="nt")
    assert metrics(result)["violations"] == 2


def test_a_name_that_says_no_syntax_is_a_finding(tmp_path: Path) -> None:
    result = validate(tmp_path, PEOPLE, name="people.txt")
    assert only_code(result) == "rdf.unknown_format"
    assert "data_format" in result.messages[0].text
    assert result.status == EnvelopeStatus.FAILED_VALIDATION


def test_json_ld_named_graphs_are_validated_with_the_rest(tmp_path: Path) -> None:
    document = {"@context": {"ex": "http://example.org/"}, "@id": "ex:graph", "@graph": PEOPLE_JSON_LD["@graph"]}
    result = validate(tmp_path, json.dumps(document), name="people.jsonld")
    assert metrics(result)["violations"] == 2
    assert metrics(result)["triples"] == 5


@pytest.mark.parametrize(
    ("name", "data", "line"),
    [
        ("bad.ttl", PREFIXES + 'ex:a a ex:Person ;\n  ex:name "A"\nex:b a ex:Person .\n', 7),
        ("bad.nt", b"<http://example.org/a> <http://example.org/p> oops .\n", None),
        ("bad.jsonld", b'{"@context": {},\n "@id": }', 2),
        ("bad.rdf", b"<rdf:RDF xmlns:rdf='http://www.w3.org/1999/02/22-rdf-syntax-ns#'>\n<unclosed>\n</rdf:RDF>", 3),
    ],
)
def test_what_is_not_rdf_is_a_syntax_finding(tmp_path: Path, name: str, data: bytes | str, line: int | None) -> None:
    result = validate(tmp_path, data, name=name)
    assert only_code(result) in ("rdf.syntax", "xml.malformed")
    (finding,) = result.messages
    assert finding.text.startswith(f"{name} is not ")
    assert finding.location is not None
    assert finding.location.line == line
    assert result.status == EnvelopeStatus.FAILED_VALIDATION


def test_a_turtle_error_says_what_was_expected(tmp_path: Path) -> None:
    result = validate(tmp_path, PREFIXES + 'ex:a ex:name "A"\nex:b a ex:Person .\n')
    assert result.messages[0].text == "data.ttl is not valid Turtle: expected '.' or '}' or ']' at end of statement"


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("deep.ttl", PREFIXES + "ex:a ex:p " + "[ ex:p " * 5000 + "1" + " ]" * 5000 + " ."),
        (
            "deep.jsonld",
            '{"@id": "http://example.org/a", "http://example.org/p": ' + "[" * 100_000 + "]" * 100_000 + "}",
        ),
    ],
)
def test_too_deep_to_read_is_a_finding(tmp_path: Path, name: str, data: str) -> None:
    assert only_code(validate(tmp_path, data, name=name)) == "rdf.depth"


def test_relative_iris_resolve_against_the_file_name_not_its_folder(tmp_path: Path) -> None:
    shapes = PREFIXES + "ex:S a sh:NodeShape ; sh:targetClass ex:Person ; sh:nodeKind sh:BlankNode ."
    result = validate(tmp_path, PREFIXES + "<#me> a ex:Person .", shapes=shapes)
    assert [m.location.path for m in result.messages if m.location] == [
        "focus node <https://validibot.invalid/data.ttl#me>"
    ]
    assert str(tmp_path) not in result.messages[0].text


# -- Shapes, ontologies and inference ----------------------------------------------------------------------------------

# ex:teaches says its subject is a teacher; a teacher must have a name.
TEACHING = PREFIXES + "ex:ann ex:teaches ex:bob ."
TEACHER_SHAPE = (
    PREFIXES
    + "ex:T a sh:NodeShape ; sh:targetClass ex:Teacher ; sh:property [ sh:path ex:name ; "
    + ("sh:minCount 1 ] .")
)
TEACHING_ONTOLOGY = PREFIXES + "ex:teaches rdfs:domain ex:Teacher . ex:Teacher rdfs:subClassOf ex:Person ."


@pytest.mark.parametrize(("inference", "violations"), [("none", 0), ("rdfs", 1), ("owlrl", 1)])
def test_inference_runs_over_the_data_and_its_ontology(tmp_path: Path, inference: str, violations: int) -> None:
    result = validate(
        tmp_path,
        TEACHING,
        shapes=TEACHER_SHAPE,
        resource_files={"ontology.ttl": TEACHING_ONTOLOGY},
        resources=["ontology.ttl"],
        inference=inference,
    )
    assert metrics(result)["violations"] == violations
    # The submission's own triples, before inference and the ontology's axioms.
    assert metrics(result)["triples"] == 1


def test_an_ontology_resource_gives_sh_class_its_class_hierarchy(tmp_path: Path) -> None:
    shapes = PREFIXES + "ex:S a sh:NodeShape ; sh:targetNode ex:ann ; sh:class ex:Person ."
    data = PREFIXES + "ex:ann a ex:Teacher ."
    assert metrics(validate(tmp_path, data, shapes=shapes))["violations"] == 1
    with_ontology = validate(
        tmp_path, data, shapes=shapes, resource_files={"ontology.ttl": TEACHING_ONTOLOGY}, resources=["*.ttl"]
    )
    assert metrics(with_ontology)["violations"] == 0


def test_shapes_in_other_resource_files_apply_too(tmp_path: Path) -> None:
    more = (
        PREFIXES
        + "ex:M a sh:NodeShape ; sh:targetClass ex:Person ; sh:property [ sh:path ex:email ; "
        + ("sh:minCount 1 ] .")
    )
    result = validate(tmp_path, PEOPLE, resource_files={"more/email.ttl": more}, resources=["more/*.ttl"])
    assert metrics(result)["violations"] == 4


@pytest.mark.parametrize(
    ("resource_files", "config", "why"),
    [
        ({}, {"shapes": "elsewhere.ttl"}, "the shapes 'elsewhere.ttl' are not one of the step's resource files"),
        ({"notes.txt": "hello"}, {}, "the RDF syntax of the resource file 'notes.txt' is not known by its extension"),
        ({"broken.ttl": "ex:a ex:b"}, {}, "the resource file 'broken.ttl' cannot be used: broken.ttl is not valid"),
        (
            {"remote.jsonld": '{"@context": "https://schema.org/"}'},
            {},
            "the resource file 'remote.jsonld' cannot be used: remote.jsonld loads its JSON-LD context from",
        ),
        (
            {
                "shapes.rdf": '<!DOCTYPE x [<!ENTITY e "e">]><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"/>'
            },
            {"shapes": "shapes.rdf"},
            "the resource file 'shapes.rdf' cannot be used: shapes.rdf has a document type declaration",
        ),
    ],
)
def test_shapes_and_resources_that_cannot_be_used_are_config_errors(
    tmp_path: Path, resource_files: dict[str, bytes | str], config: dict[str, object], why: str
) -> None:
    usual = context(tmp_path, PEOPLE, resource_files=resource_files, resources=["*"])
    with pytest.raises(ConfigError, match="^" + why.replace("(", r"\(")):
        ShaclValidator().validate(dataclasses.replace(usual, inputs={**usual.inputs, **config}))


def test_shapes_pyshacl_cannot_use_are_a_config_error(tmp_path: Path) -> None:
    shapes = PREFIXES + "ex:S a sh:NodeShape ; sh:targetNode ex:x ; sh:property [ sh:path ( ex:a ) ; sh:minCount 1 ] ."
    with pytest.raises(ConfigError, match=r"^the shapes cannot be used: .*at least two"):
        validate(tmp_path, PREFIXES + "ex:x ex:a 1 .", shapes=shapes)


@pytest.mark.parametrize(
    "config",
    [
        {"shapes": "shapes.ttl", "schema": "x"},
        {"shapes": "shapes.ttl", "inference": "both"},
        {"shapes": "shapes.ttl", "data_format": "trig"},
        {"shapes": ""},
        {},
    ],
)
def test_a_config_the_model_refuses(tmp_path: Path, config: dict[str, object]) -> None:
    with pytest.raises(ConfigError, match="invalid configuration for validator 'shacl'"):
        ShaclValidator().validate(dataclasses.replace(context(tmp_path, PEOPLE), inputs=config))


def test_the_registry_knows_the_validator() -> None:
    validator = get_validator("shacl")
    assert isinstance(validator, ShaclValidator)
    assert validator.mode == "inline"
    assert validator.config_model.model_validate({"shapes": "s.ttl"}).model_dump() == {
        "shapes": "s.ttl",
        "resources": [],
        "data_format": None,
        "inference": "none",
    }


# -- Hostile input: nothing is fetched, no file read but the step's ----------------------------------------------------


@pytest.fixture
def network() -> Iterator[list[object]]:
    """Every attempt to resolve a name or connect, each refused; the test asserts there were none."""
    attempts: list[object] = []

    def refuse(*args: object, **kwargs: object) -> None:
        attempts.append(args)
        raise OSError("the network is not for tests")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket, "getaddrinfo", refuse)
        patch.setattr(socket, "create_connection", refuse)
        patch.setattr(socket.socket, "connect", refuse)
        patch.setattr(socket.socket, "connect_ex", refuse)
        yield attempts


REMOTE_CONTEXTS = {
    "url": {"@context": "https://schema.org/", "@id": "http://example.org/a", "@type": "Person"},
    "relative name": {"@context": "context.jsonld", "@id": "http://example.org/a"},
    "file url": {"@context": "file:///etc/passwd", "@id": "http://example.org/a"},
    "url in a list": {"@context": [{"ex": "http://example.org/"}, "https://schema.org/"], "@id": "ex:a"},
    "import": {"@context": {"@version": 1.1, "@import": "https://schema.org/"}, "@id": "http://example.org/a"},
    "scoped": {
        "@context": {"knows": {"@id": "http://example.org/knows", "@context": "https://schema.org/"}},
        "@id": "http://example.org/a",
        "knows": {"@id": "http://example.org/b"},
    },
    "nested node": {"@id": "http://example.org/a", "http://example.org/p": {"@context": "https://schema.org/"}},
}


@pytest.mark.parametrize("document", REMOTE_CONTEXTS.values(), ids=REMOTE_CONTEXTS.keys())
def test_a_json_ld_context_from_elsewhere_is_refused_unread(
    tmp_path: Path, network: list[object], document: dict[str, object]
) -> None:
    result = validate(tmp_path, json.dumps(document), name="data.jsonld")
    assert only_code(result) == "jsonld.remote_context"
    assert "contexts must be inline" in result.messages[0].text
    assert result.status == EnvelopeStatus.FAILED_VALIDATION
    assert network == []


@pytest.mark.parametrize(
    "target",
    ["https://schema.org/", "http://127.0.0.1:9/context.jsonld", "context.jsonld", "file:///etc/passwd"],
)
def test_a_context_the_scan_missed_is_still_not_fetched(
    tmp_path: Path, network: list[object], monkeypatch: pytest.MonkeyPatch, target: str
) -> None:
    # Past the scan (as if it had a gap), rdflib goes for the context: the audit hook stops it, network or file.
    monkeypatch.setattr(shacl, "_document_reference", lambda document: None)
    result = validate(tmp_path, json.dumps({"@context": target, "@id": "http://example.org/a"}), name="data.jsonld")
    assert only_code(result) == "rdf.external_reference"
    assert result.messages[0].text.startswith("data.jsonld refers to the ")
    assert network == []


XXE = b"""<?xml version="1.0"?>
<!DOCTYPE rdf:RDF [ <!ENTITY secret SYSTEM "file:///etc/passwd"> ]>
<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" xmlns:ex="http://example.org/">
  <ex:Person rdf:about="http://example.org/a"><ex:name>&secret;</ex:name></ex:Person>
</rdf:RDF>
"""
REMOTE_DTD = b"""<?xml version="1.0"?>
<!DOCTYPE rdf:RDF SYSTEM "http://127.0.0.1:9/rdf.dtd">
<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"/>
"""
LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE rdf:RDF [
  <!ENTITY a "aaaaaaaaaa"> <!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"> <!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">
]>
<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" xmlns:ex="http://example.org/">
  <ex:Person rdf:about="http://example.org/a"><ex:name>&c;</ex:name></ex:Person>
</rdf:RDF>
"""


@pytest.mark.parametrize("document", [XXE, REMOTE_DTD, LAUGHS], ids=["xxe", "remote dtd", "entity expansion"])
def test_rdf_xml_with_a_document_type_declaration_is_refused(
    tmp_path: Path, network: list[object], document: bytes
) -> None:
    result = validate(tmp_path, document, name="data.rdf")
    assert only_code(result) == "xml.doctype_refused"
    assert "root:" not in result.messages[0].text
    assert network == []


def test_a_sparql_service_in_the_shapes_goes_nowhere(tmp_path: Path, network: list[object]) -> None:
    shapes = (
        PREFIXES
        + """
ex:S a sh:NodeShape ; sh:targetClass ex:Person ;
  sh:sparql [ sh:select "SELECT $this WHERE { SERVICE <http://127.0.0.1:9/sparql> { $this ?p ?o } }" ] .
"""
    )
    with pytest.raises(ConfigError, match="SERVICE"):
        validate(tmp_path, PEOPLE, shapes=shapes)
    assert network == []


def test_a_sparql_from_in_the_shapes_reads_no_file(tmp_path: Path, network: list[object]) -> None:
    # rdflib loads a FROM graph only into a dataset: the data graph is a graph, and the query runs over it alone.
    shapes = (
        PREFIXES
        + """
ex:S a sh:NodeShape ; sh:targetClass ex:Person ;
  sh:sparql [ sh:select "SELECT $this FROM <file:///etc/passwd> FROM <http://127.0.0.1:9/g> WHERE { $this ?p ?o }" ] .
"""
    )
    result = validate(tmp_path, PEOPLE, shapes=shapes)
    assert {m.code for m in result.messages} == {"shacl.SPARQLConstraintComponent"}
    assert "root:" not in " ".join(m.text for m in result.messages)
    assert network == []


def test_the_audit_hook_refuses_only_inside_a_validation(tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("readable")
    with shacl._sealed() as refusals, pytest.raises(shacl._Refused):
        outside.read_text()
    assert refusals == [f"the file {str(outside.resolve())!r}"]
    assert outside.read_text() == "readable"


# -- Time --------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ExpiringContext(ValidationContext):
    """A context whose time runs out at its `expire_after + 1`th look at the clock: the inline budget, or else the
    step's own time."""

    expire_after: int = 0
    budget: bool = True
    looks: list[int] = dataclasses.field(default_factory=list)

    def check_budget(self) -> None:
        self.looks.append(1)
        if self.budget and len(self.looks) > self.expire_after:
            raise OverBudget("spent")

    def seconds_left(self) -> float:
        return -1.0 if not self.budget and len(self.looks) > self.expire_after else 60.0


def people(count: int) -> str:
    """`count` people of five triples each; one in ten has a negative age."""
    return PREFIXES + "\n".join(
        f'ex:p{i} a ex:Person ; ex:name "P{i}" ; ex:age {-1 if i % 10 == 0 else 30} ; ex:email "p{i}@example.org" ; '
        f"ex:knows ex:p{(i + 1) % count} ."
        for i in range(count)
    )


def looks_of_a_whole_run(tmp_path: Path) -> tuple[ExpiringContext, int]:
    """A context of 10,000 triples, and how often a run that does not run out of time looks at the clock."""
    whole = context(tmp_path, people(2000), context_class=ExpiringContext)
    assert isinstance(whole, ExpiringContext)
    whole = dataclasses.replace(whole, expire_after=10**9)
    ShaclValidator().validate(whole)
    # Once before parsing, once after, and between those and after them, every CLOCK_CHECK_INTERVAL store operations.
    assert len(whole.looks) > 2 + 10_000 // shacl.CLOCK_CHECK_INTERVAL
    return whole, len(whole.looks)


def test_past_the_inline_budget_inside_the_engine_the_step_goes_to_a_job(tmp_path: Path) -> None:
    whole, looks = looks_of_a_whole_run(tmp_path)
    # The last looks are the engine's, as it validates: running out at the one before last stops it there.
    late = dataclasses.replace(whole, expire_after=looks - 2, looks=[])
    with pytest.raises(OverBudget):
        ShaclValidator().validate(late)
    assert len(late.looks) == looks - 1


def test_past_the_steps_time_the_validation_stops(tmp_path: Path) -> None:
    whole, looks = looks_of_a_whole_run(tmp_path)
    late = dataclasses.replace(whole, expire_after=looks - 2, budget=False, looks=[])
    result = ShaclValidator().validate(late)
    assert result.timed_out
    assert result.runtime_error == "the SHACL validation did not finish within the step's 60 s timeout and was stopped"
    assert result.messages == []
    assert len(late.looks) == looks - 1


def test_ten_thousand_triples(tmp_path: Path) -> None:
    started = time.perf_counter()
    result = validate(tmp_path, people(2000))
    elapsed = time.perf_counter() - started
    assert metrics(result) == {"conforms": 0, "violations": 200, "warnings": 0, "infos": 0, "triples": 10_000}
    # About 0.8 s here; the bound only catches a collapse.
    assert elapsed < 20
