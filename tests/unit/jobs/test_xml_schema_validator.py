from __future__ import annotations

import dataclasses
import socket
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from jobs.registry import get_validator
from jobs.validators import xml_schema
from jobs.validators.base import ConfigError, InputFile, OverBudget, ValidationContext, ValidationResult
from jobs.validators.xml_schema import MAX_FINDINGS, XmlSchemaConfig, XmlSchemaValidator
from schemas.enums import EnvelopeStatus, Severity
from schemas.envelopes import FileRef, Message
from tests.support import CORPORA

UBL_XSD = CORPORA / "xml" / "ubl-2.1-xsd"
EN16931 = CORPORA / "xml" / "en16931-ubl"
UBL_RESOURCES = {path.relative_to(UBL_XSD).as_posix(): path for path in sorted(UBL_XSD.rglob("*.xsd"))}
UBL_EXAMPLES = sorted(
    [*(EN16931 / "ubl" / "examples").iterdir(), *(EN16931 / "test" / "testfiles").iterdir()], key=lambda p: p.name
)
INVOICE_XSD = "xsd/maindoc/UBL-Invoice-2.1.xsd"
CREDIT_NOTE_XSD = "xsd/maindoc/UBL-CreditNote-2.1.xsd"
EXAMPLE1 = EN16931 / "ubl" / "examples" / "ubl-tc434-example1.xml"

XS = 'xmlns:xs="http://www.w3.org/2001/XMLSchema"'
ITEMS_XSD = f"""<xs:schema {XS} targetNamespace="urn:items" xmlns="urn:items" elementFormDefault="qualified">
  <xs:element name="items">
    <xs:complexType>
      <xs:sequence><xs:element name="item" type="xs:int" maxOccurs="unbounded"/></xs:sequence>
    </xs:complexType>
  </xs:element>
</xs:schema>""".encode()
NO_NAMESPACE_XSD = f"""<xs:schema {XS}>
  <xs:element name="root">
    <xs:complexType><xs:sequence><xs:element name="item" type="xs:int" minOccurs="0" maxOccurs="unbounded"/>
    </xs:sequence></xs:complexType>
  </xs:element>
</xs:schema>""".encode()


def context(
    tmp_path: Path, document: bytes | Path, config: dict, resource_files: Mapping[str, bytes | Path] | None = None
) -> ValidationContext:
    """`resource_files` by name: bytes are stored as the runtime stores them (each at its name as a relative path),
    a Path (a corpus file) is read in place."""
    if isinstance(document, Path):
        path = document
    else:
        tmp_path.mkdir(parents=True, exist_ok=True)
        path = tmp_path / "doc.xml"
        path.write_bytes(document)
    ref = FileRef(name=path.name, role="primary", uri="gs://b/doc.xml", size_bytes=path.stat().st_size, sha256="0" * 64)
    stored = {}
    for name, data in (resource_files or {}).items():
        if isinstance(data, Path):
            stored[name] = data
            continue
        stored[name] = tmp_path / "resources" / name
        stored[name].parent.mkdir(parents=True, exist_ok=True)
        stored[name].write_bytes(data)
    return ValidationContext(
        files=[InputFile(ref, path)],
        inputs=config,
        workdir=tmp_path,
        timeout_seconds=60,
        deadline=time.monotonic() + 60,
        resources=stored,
    )


def validate(
    tmp_path: Path,
    document: bytes | Path,
    schema: str,
    resource_files: Mapping[str, bytes | Path],
    **config: object,
) -> ValidationResult:
    return XmlSchemaValidator().validate(context(tmp_path, document, {"schema": schema, **config}, resource_files))


def located(messages: list[Message]) -> list[tuple[str, str, int | None, str | None]]:
    """What a finding says and where, without its wording."""
    return [
        (m.severity, m.code, m.location.line if m.location else None, m.location.path if m.location else None)
        for m in messages
    ]


def metrics(result: ValidationResult) -> dict[str, float]:
    return {m.name: m.value for m in result.metrics}


def only_error(result: ValidationResult) -> Message:
    assert result.status == EnvelopeStatus.FAILED_VALIDATION
    assert len(result.messages) == 1, result.messages
    message = result.messages[0]
    assert message.severity == Severity.ERROR
    return message


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[object]]:
    """Every attempt to resolve a host or connect is recorded and fails."""
    attempts: list[object] = []

    def refuse(*args: object, **kwargs: object) -> None:
        attempts.append(args)
        raise OSError("the network is not available in this test")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    yield attempts
    assert attempts == []


@pytest.fixture(autouse=True)
def fresh_compile_cache() -> Iterator[None]:
    xml_schema._compiled.clear()
    yield
    xml_schema._compiled.clear()


# --- UBL 2.1 and the EN 16931 examples ----------------------------------------------------------------------------


@pytest.mark.parametrize("example", UBL_EXAMPLES, ids=lambda p: p.name)
def test_en16931_examples_are_valid_ubl(tmp_path: Path, example: Path) -> None:
    schema = CREDIT_NOTE_XSD if b"<CreditNote" in example.read_bytes() else INVOICE_XSD
    result = validate(tmp_path, example, schema, UBL_RESOURCES)
    assert result.status == EnvelopeStatus.SUCCESS, result.messages
    assert result.messages == []
    assert metrics(result)["schema_errors"] == 0
    assert metrics(result)["elements"] > 50


def test_a_missing_element_is_located_by_line_path_and_libxml2_error_type(tmp_path: Path) -> None:
    # Emptied rather than removed, so that the lines keep their numbers.
    broken = EXAMPLE1.read_bytes().replace(b"<cbc:IssueDate>2015-01-09</cbc:IssueDate>", b"")
    result = validate(tmp_path, broken, INVOICE_XSD, UBL_RESOURCES)
    message = only_error(result)
    assert located([message]) == [
        (Severity.ERROR, "xml-schema.SCHEMAV_ELEMENT_CONTENT", 18, "/Invoice/cbc:DueDate"),
    ]
    assert "IssueDate" in message.text
    assert metrics(result)["schema_errors"] == 1


def test_an_unexpected_element_deep_in_the_invoice_is_located(tmp_path: Path) -> None:
    lines = EXAMPLE1.read_bytes().splitlines(keepends=True)
    # Line 132 is the second invoice line's cbc:ID.
    assert lines[131].strip() == b"<cbc:ID>2</cbc:ID>"
    lines[131] = lines[131].rstrip() + b"<cbc:Colour>red</cbc:Colour>\n"
    result = validate(tmp_path, b"".join(lines), INVOICE_XSD, UBL_RESOURCES)
    assert located(result.messages) == [
        (Severity.ERROR, "xml-schema.SCHEMAV_ELEMENT_CONTENT", 132, "/Invoice/cac:InvoiceLine[2]/cbc:Colour"),
    ]


def test_a_wrong_value_names_the_datatype_error(tmp_path: Path) -> None:
    broken = EXAMPLE1.read_bytes().replace(b"<cbc:IssueDate>2015-01-09<", b"<cbc:IssueDate>yesterday<")
    result = validate(tmp_path, broken, INVOICE_XSD, UBL_RESOURCES)
    assert [(m.code, m.location.line, m.location.path) for m in result.messages] == [
        ("xml-schema.SCHEMAV_CVC_DATATYPE_VALID_1_2_1", 17, "/Invoice/cbc:IssueDate"),
    ]


def test_ubl_as_xsd11(tmp_path: Path) -> None:
    # xmlschema reads the multi-file schema through the same resources, xmldsig's internal DTD subset included.
    assert validate(tmp_path, EXAMPLE1, INVOICE_XSD, UBL_RESOURCES, schema_type="xsd11").messages == []
    broken = EXAMPLE1.read_bytes().replace(b"<cbc:IssueDate>2015-01-09</cbc:IssueDate>", b"")
    result = validate(tmp_path, broken, INVOICE_XSD, UBL_RESOURCES, schema_type="xsd11")
    assert located(result.messages) == [
        (Severity.ERROR, "xml-schema.XMLSchemaChildrenValidationError", 18, "/Invoice/cbc:DueDate"),
    ]
    assert "DueDate" in result.messages[0].text


def test_ubl_is_compiled_once_per_content(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    compiled: list[str] = []
    compile_xsd = xml_schema._COMPILERS["xsd"]

    def counting(name: str, resources: xml_schema._Resources) -> xml_schema._Check:
        compiled.append(name)
        return compile_xsd(name, resources)

    monkeypatch.setitem(xml_schema._COMPILERS, "xsd", counting)
    for _ in range(3):
        assert validate(tmp_path, EXAMPLE1, INVOICE_XSD, UBL_RESOURCES).status == EnvelopeStatus.SUCCESS
    assert compiled == [INVOICE_XSD]
    # The same names with other content are another schema.
    changed = {"main.xsd": NO_NAMESPACE_XSD}
    validate(tmp_path / "a", b"<root/>", "main.xsd", changed)
    validate(tmp_path / "b", b"<root/>", "main.xsd", {"main.xsd": NO_NAMESPACE_XSD.replace(b"root", b"top")})
    assert compiled == [INVOICE_XSD, "main.xsd", "main.xsd"]


def test_the_compile_cache_is_bounded(tmp_path: Path) -> None:
    for n in range(xml_schema.MAX_COMPILED_SCHEMAS + 5):
        schema = NO_NAMESPACE_XSD.replace(b"<xs:schema", f"<!-- {n} --><xs:schema".encode(), 1)
        validate(tmp_path / str(n), b"<root/>", "s.xsd", {"s.xsd": schema})
    assert len(xml_schema._compiled) == xml_schema.MAX_COMPILED_SCHEMAS


def test_past_the_inline_budget_the_step_is_handed_on(tmp_path: Path) -> None:
    ctx = context(tmp_path, EXAMPLE1, {"schema": INVOICE_XSD}, UBL_RESOURCES)
    with pytest.raises(OverBudget):
        XmlSchemaValidator().validate(dataclasses.replace(ctx, budget_deadline=time.monotonic() - 1))


# --- hostile documents --------------------------------------------------------------------------------------------


SECRET = "secret-outside-the-resources"


@pytest.fixture
def outside_file(tmp_path: Path) -> Path:
    """A file beside the resources, which nothing may read."""
    path = tmp_path / "outside.txt"
    path.write_text(SECRET)
    return path


def hostile_documents(outside: Path) -> dict[str, bytes]:
    laughs = "".join(f'<!ENTITY l{n} "{f"&l{n - 1};" * 10}">' for n in range(1, 10))
    return {
        "xxe-file": f'<!DOCTYPE root [<!ENTITY x SYSTEM "file://{outside}">]><root>&x;</root>'.encode(),
        "xxe-url": b'<!DOCTYPE root [<!ENTITY x SYSTEM "http://example.com/x">]><root>&x;</root>',
        "billion-laughs": f'<!DOCTYPE root [<!ENTITY l0 "lol">{laughs}]><root>&l9;</root>'.encode(),
        "external-dtd": f'<!DOCTYPE root SYSTEM "file://{outside}"><root/>'.encode(),
        "parameter-entity": f'<!DOCTYPE root [<!ENTITY % p SYSTEM "file://{outside}"> %p;]><root/>'.encode(),
    }


@pytest.mark.parametrize("kind", ["xxe-file", "xxe-url", "billion-laughs", "external-dtd", "parameter-entity"])
@pytest.mark.parametrize("schema_type", ["xsd", "xsd11"])
def test_a_document_with_a_doctype_is_refused_whole(
    tmp_path: Path, outside_file: Path, no_network: list[object], kind: str, schema_type: str
) -> None:
    document = hostile_documents(outside_file)[kind]
    result = validate(tmp_path, document, "s.xsd", {"s.xsd": NO_NAMESPACE_XSD}, schema_type=schema_type)
    message = only_error(result)
    # libxml2 stops an entity bomb by its amplification limit even when it expands nothing.
    assert message.code == ("xml.malformed" if kind == "billion-laughs" else "xml.doctype_refused")
    assert SECRET not in message.text
    assert result.metrics == []


def test_deep_nesting_is_refused(tmp_path: Path) -> None:
    document = b"<root>" + b"<item>" * 10_000 + b"</item>" * 10_000 + b"</root>"
    message = only_error(validate(tmp_path, document, "s.xsd", {"s.xsd": NO_NAMESPACE_XSD}))
    assert message.code == "xml.malformed"


def test_a_malformed_document_is_located(tmp_path: Path) -> None:
    message = only_error(validate(tmp_path, b"<root>\n<item>1</root>", "s.xsd", {"s.xsd": NO_NAMESPACE_XSD}))
    assert (message.code, message.location.line) == ("xml.malformed", 2)


def test_schema_location_hints_in_the_document_are_ignored(tmp_path: Path, no_network: list[object]) -> None:
    document = (
        b'<root xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"'
        b' xsi:noNamespaceSchemaLocation="http://example.com/other.xsd"><item>1</item></root>'
    )
    for schema_type in ("xsd", "xsd11"):
        result = validate(tmp_path, document, "s.xsd", {"s.xsd": NO_NAMESPACE_XSD}, schema_type=schema_type)
        assert result.status == EnvelopeStatus.SUCCESS, result.messages


# --- hostile schemas: references outside the resources -------------------------------------------------------------


def importing(location: str, *, include: bool = False) -> bytes:
    reference = (
        f'<xs:include schemaLocation="{location}"/>'
        if include
        else f'<xs:import namespace="urn:other" schemaLocation="{location}"/>'
    )
    return f"""<xs:schema {XS} xmlns:o="urn:other">
  {reference}
  <xs:element name="root"/>
</xs:schema>""".encode()


@pytest.fixture
def outside_schema(tmp_path: Path) -> Path:
    """A schema beside the resources folder, where "../outside.xsd" from a resource at the top would find it on disk:
    were it read, the import would resolve and the schema compile."""
    path = tmp_path / "outside.xsd"
    path.write_text(f'<xs:schema {XS} targetNamespace="urn:other"><xs:element name="x"/></xs:schema>')
    return path


@pytest.mark.parametrize("schema_type", ["xsd", "xsd11"])
@pytest.mark.parametrize("include", [False, True], ids=["import", "include"])
@pytest.mark.parametrize(
    ("location", "shown"),
    [
        ("/etc/passwd", "passwd"),
        ("file:///etc/passwd", "file:///etc/passwd"),
        ("../outside.xsd", "outside.xsd"),
        ("../../../../../../../../etc/hostname", "etc/hostname"),
        ("http://example.com/schemas/other.xsd", "http://example.com/schemas/other.xsd"),
        ("https://resources.validibot.invalid/not-there.xsd", "not-there.xsd"),
    ],
)
def test_an_import_outside_the_resources_is_one_clear_error(
    tmp_path: Path,
    outside_schema: Path,
    no_network: list[object],
    schema_type: str,
    include: bool,
    location: str,
    shown: str,
) -> None:
    result = validate(
        tmp_path, b"<root/>", "main.xsd", {"main.xsd": importing(location, include=include)}, schema_type=schema_type
    )
    message = only_error(result)
    assert message.code == "xml-schema.unresolvable_import"
    assert shown in message.text
    assert "not one of the step's resource files" in message.text
    assert result.metrics == []


def test_an_import_resolves_relative_to_the_importing_schema(tmp_path: Path) -> None:
    main = f"""<xs:schema {XS} xmlns:i="urn:items">
  <xs:import namespace="urn:items" schemaLocation="../common/items.xsd"/>
  <xs:element name="root"><xs:complexType><xs:sequence><xs:element ref="i:items"/></xs:sequence></xs:complexType>
  </xs:element>
</xs:schema>""".encode()
    resources: dict[str, bytes | Path] = {"xsd/main/root.xsd": main, "xsd/common/items.xsd": ITEMS_XSD}
    valid = b'<root><items xmlns="urn:items"><item>1</item></items></root>'
    invalid = b'<root><items xmlns="urn:items"><item>1</item><item>x</item></items></root>'
    for schema_type in ("xsd", "xsd11"):
        assert validate(tmp_path, valid, "xsd/main/root.xsd", resources, schema_type=schema_type).messages == []
        result = validate(tmp_path, invalid, "xsd/main/root.xsd", resources, schema_type=schema_type)
        assert [m.location.path for m in result.messages] == ["/root/items/item[2]"], schema_type


@pytest.mark.parametrize("schema_type", ["xsd", "xsd11"])
def test_an_import_by_url_finds_the_resource_of_that_file_name(tmp_path: Path, schema_type: str) -> None:
    main = f"""<xs:schema {XS} xmlns:i="urn:items">
  <xs:import namespace="urn:items" schemaLocation="http://example.com/schemas/items.xsd"/>
  <xs:element name="root"><xs:complexType><xs:sequence><xs:element ref="i:items"/></xs:sequence></xs:complexType>
  </xs:element>
</xs:schema>""".encode()
    resources: dict[str, bytes | Path] = {"main.xsd": main, "vendor/items.xsd": ITEMS_XSD}
    valid = b'<root><items xmlns="urn:items"><item>1</item></items></root>'
    assert validate(tmp_path, valid, "main.xsd", resources, schema_type=schema_type).messages == []
    # Two resources of that name: which one is meant is not guessed.
    resources["other/items.xsd"] = ITEMS_XSD
    message = only_error(validate(tmp_path, valid, "main.xsd", resources, schema_type=schema_type))
    assert message.code == "xml-schema.unresolvable_import"
    assert "other/items.xsd, vendor/items.xsd" in message.text


def test_a_schema_file_with_internal_entities_is_read(tmp_path: Path) -> None:
    # As the W3C's own schemas (xmldsig, in UBL) are written.
    schema = f"""<!DOCTYPE xs:schema [<!ENTITY ns "urn:items">]>
<xs:schema {XS} targetNamespace="&ns;" xmlns="&ns;" elementFormDefault="qualified">
  <xs:element name="items"><xs:complexType><xs:sequence><xs:element name="item" type="xs:int"/></xs:sequence>
  </xs:complexType></xs:element>
</xs:schema>""".encode()
    document = b'<items xmlns="urn:items"><item>1</item></items>'
    for schema_type in ("xsd", "xsd11"):
        assert validate(tmp_path, document, "s.xsd", {"s.xsd": schema}, schema_type=schema_type).messages == []


@pytest.mark.parametrize("schema_type", ["xsd", "xsd11"])
@pytest.mark.parametrize("imported", [False, True], ids=["main", "imported"])
def test_a_schema_file_with_an_external_entity_or_an_entity_bomb_is_a_config_error(
    tmp_path: Path, outside_file: Path, no_network: list[object], schema_type: str, imported: bool
) -> None:
    laughs = "".join(f'<!ENTITY l{n} "{f"&l{n - 1};" * 10}">' for n in range(1, 10))
    for doctype in (f'<!ENTITY x SYSTEM "file://{outside_file}">', f'<!ENTITY l0 "lol">{laughs}'):
        entity = "&x;" if "SYSTEM" in doctype else "&l9;"
        hostile = f"""<!DOCTYPE xs:schema [{doctype}]>
<xs:schema {XS} targetNamespace="urn:other"><xs:element name="x"><xs:annotation>
<xs:documentation>{entity}</xs:documentation></xs:annotation></xs:element></xs:schema>""".encode()
        resources: dict[str, bytes | Path] = {"hostile.xsd": hostile}
        schema = "hostile.xsd"
        if imported:
            resources["main.xsd"] = importing("hostile.xsd")
            schema = "main.xsd"
        with pytest.raises(ConfigError, match=r"hostile\.xsd") as raised:
            validate(tmp_path, b"<root/>", schema, resources, schema_type=schema_type)
        assert SECRET not in str(raised.value)


# --- XSD 1.1 ------------------------------------------------------------------------------------------------------

RANGE_XSD11 = f"""<xs:schema {XS}>
  <xs:element name="range">
    <xs:complexType>
      <xs:attribute name="min" type="xs:int" use="required"/>
      <xs:attribute name="max" type="xs:int" use="required"/>
      <xs:assert test="@min le @max"/>
    </xs:complexType>
  </xs:element>
</xs:schema>""".encode()


def test_xsd11_assertions(tmp_path: Path) -> None:
    resources: dict[str, bytes | Path] = {"range.xsd": RANGE_XSD11}
    ok = validate(tmp_path, b'<range min="1" max="2"/>', "range.xsd", resources, schema_type="xsd11")
    assert ok.status == EnvelopeStatus.SUCCESS
    assert metrics(ok) == {"schema_errors": 0, "elements": 1}
    failed = validate(tmp_path, b'\n<range min="3" max="2"/>', "range.xsd", resources, schema_type="xsd11")
    message = only_error(failed)
    assert located([message]) == [(Severity.ERROR, "xml-schema.XMLSchemaValidationError", 2, "/range")]
    assert "@min le @max" in message.text


def test_xsd11_assertions_are_not_xsd10(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"range\.xsd.*does not compile"):
        validate(tmp_path, b'<range min="1" max="2"/>', "range.xsd", {"range.xsd": RANGE_XSD11})


# --- RelaxNG ------------------------------------------------------------------------------------------------------

RNG = 'xmlns="http://relaxng.org/ns/structure/1.0" datatypeLibrary="http://www.w3.org/2001/XMLSchema-datatypes"'
RNG_MAIN = f"""<grammar {RNG}>
  <include href="common/items.rng"><define name="note"><element name="note"><text/></element></define></include>
  <start>
    <element name="root"><oneOrMore><ref name="item"/></oneOrMore><optional><ref name="note"/></optional>
      <externalRef href="../tail.rng"/></element>
  </start>
</grammar>""".encode()
RNG_ITEMS = f"""<grammar {RNG}>
  <define name="item"><element name="item"><data type="int"/></element></define>
  <define name="note"><element name="note"><data type="int"/></element></define>
</grammar>""".encode()
RNG_TAIL = b'<element name="tail" xmlns="http://relaxng.org/ns/structure/1.0"><empty/></element>'
RNG_RESOURCES: dict[str, bytes | Path] = {
    "rng/main.rng": RNG_MAIN,
    "rng/common/items.rng": RNG_ITEMS,
    "tail.rng": RNG_TAIL,
}


def test_relaxng_with_include_override_and_external_ref(tmp_path: Path) -> None:
    # The include overrides `note`: text, not an int.
    valid = b"<root><item>1</item><item>2</item><note>any text</note><tail/></root>"
    result = validate(tmp_path, valid, "rng/main.rng", RNG_RESOURCES, schema_type="relaxng")
    assert result.status == EnvelopeStatus.SUCCESS, result.messages
    assert metrics(result) == {"schema_errors": 0, "elements": 5}


def test_relaxng_violations(tmp_path: Path) -> None:
    invalid = b"<root>\n<item>1</item>\n<item>two</item>\n<tail/>\n<extra/></root>"
    result = validate(tmp_path, invalid, "rng/main.rng", RNG_RESOURCES, schema_type="relaxng")
    assert result.status == EnvelopeStatus.FAILED_VALIDATION
    assert all(m.code.startswith("xml-schema.RELAXNG_") for m in result.messages)
    assert ("/root/item[2]", 3) in [(m.location.path, m.location.line) for m in result.messages]
    assert metrics(result)["schema_errors"] == len(result.messages)


def test_relaxng_include_outside_the_resources_is_one_clear_error(
    tmp_path: Path, outside_file: Path, no_network: list[object]
) -> None:
    for href in (str(outside_file), f"file://{outside_file}", "../../outside.txt", "http://example.com/x.rng"):
        main = f'<grammar {RNG}><include href="{href}"/><start><element name="r"><empty/></element></start></grammar>'
        result = validate(tmp_path, b"<r/>", "main.rng", {"main.rng": main.encode()}, schema_type="relaxng")
        message = only_error(result)
        assert message.code == "xml-schema.unresolvable_import"
        assert SECRET not in message.text


def test_relaxng_include_problems_are_config_errors(tmp_path: Path) -> None:
    overrides_nothing = RNG_MAIN.replace(b'define name="note"', b'define name="nothing"')
    cases = {
        "overrides what it does not define: nothing": {**RNG_RESOURCES, "rng/main.rng": overrides_nothing},
        "includes itself": {
            **RNG_RESOURCES,
            "rng/common/items.rng": RNG_MAIN.replace(b"common/items.rng", b"items.rng"),
        },
        "is not a grammar": {**RNG_RESOURCES, "rng/common/items.rng": RNG_TAIL},
    }
    for reason, resources in cases.items():
        with pytest.raises(ConfigError, match=reason):
            validate(tmp_path, b"<root/>", "rng/main.rng", resources, schema_type="relaxng")


# --- DTD ----------------------------------------------------------------------------------------------------------

DTD_MAIN = b"""<!ELEMENT root (item+)>
<!ATTLIST root version CDATA #REQUIRED>
<!ENTITY % items SYSTEM "modules/items.ent">
%items;
"""
DTD_ITEMS = b"<!ELEMENT item (#PCDATA)>\n<!ATTLIST item id ID #IMPLIED>\n"
DTD_RESOURCES: dict[str, bytes | Path] = {"dtd/main.dtd": DTD_MAIN, "dtd/modules/items.ent": DTD_ITEMS}


def test_dtd_with_a_module_among_the_resources(tmp_path: Path) -> None:
    result = validate(
        tmp_path, b'<root version="1"><item id="a">x</item></root>', "dtd/main.dtd", DTD_RESOURCES, schema_type="dtd"
    )
    assert result.status == EnvelopeStatus.SUCCESS, result.messages
    failed = validate(
        tmp_path,
        b'<root>\n<item id="a">x</item>\n<item id="a"/>\n<other/></root>',
        "dtd/main.dtd",
        DTD_RESOURCES,
        schema_type="dtd",
    )
    assert sorted((m.code, m.location.path) for m in failed.messages) == [
        ("xml-schema.DTD_CONTENT_MODEL", "/root"),
        ("xml-schema.DTD_ID_REDEFINED", "/root/item[2]"),
        ("xml-schema.DTD_MISSING_ATTRIBUTE", "/root"),
        ("xml-schema.DTD_UNKNOWN_ELEM", "/root/other"),
    ]


def test_dtd_entities_outside_the_resources_are_one_clear_error(
    tmp_path: Path, outside_file: Path, no_network: list[object]
) -> None:
    for system_id in (f"file://{outside_file}", str(outside_file), "../outside.txt", "http://example.com/x.ent"):
        dtd = f'<!ELEMENT root EMPTY>\n<!ENTITY % x SYSTEM "{system_id}">\n%x;\n'.encode()
        result = validate(tmp_path, b"<root/>", "main.dtd", {"main.dtd": dtd}, schema_type="dtd")
        message = only_error(result)
        assert message.code == "xml-schema.unresolvable_import"
        assert SECRET not in message.text


def test_a_broken_dtd_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"main\.dtd"):
        validate(tmp_path, b"<root/>", "main.dtd", {"main.dtd": b"<!ELEMENT root (a"}, schema_type="dtd")


# --- findings and paths -------------------------------------------------------------------------------------------


def test_findings_are_capped_with_a_summary(tmp_path: Path) -> None:
    document = b"<root>" + b"<item>x</item>" * (MAX_FINDINGS + 500) + b"</root>"
    result = validate(tmp_path, document, "s.xsd", {"s.xsd": NO_NAMESPACE_XSD})
    assert len(result.messages) == MAX_FINDINGS + 1
    assert all(m.severity == Severity.ERROR for m in result.messages[:-1])
    summary = result.messages[-1]
    assert (summary.severity, summary.code) == (Severity.INFO, "xml-schema.more_errors")
    assert "500 more" in summary.text
    assert metrics(result) == {"schema_errors": MAX_FINDINGS + 500, "elements": MAX_FINDINGS + 501}
    assert result.messages[999].location.path == f"/root/item[{MAX_FINDINGS}]"


def test_paths_name_elements_in_a_default_namespace(tmp_path: Path) -> None:
    # libxml2 spells this one /*/*[3]; comments and processing instructions between them do not count.
    document = b'<items xmlns="urn:items"><item>1</item><!-- c --><item>2</item><?pi x?><item>x</item></items>'
    result = validate(tmp_path, document, "items.xsd", {"items.xsd": ITEMS_XSD})
    assert [m.location.path for m in result.messages] == ["/items/item[3]"]


def test_paths_keep_the_documents_prefixes(tmp_path: Path) -> None:
    document = b'<i:items xmlns:i="urn:items"><i:item>1</i:item><i:item>x</i:item></i:items>'
    result = validate(tmp_path, document, "items.xsd", {"items.xsd": ITEMS_XSD})
    assert [m.location.path for m in result.messages] == ["/i:items/i:item[2]"]


# --- configuration ------------------------------------------------------------------------------------------------


def test_config_model() -> None:
    config = XmlSchemaConfig.model_validate({"schema": "a.xsd"})
    assert (config.schema_type, config.xml_schema, config.resources) == ("xsd", "a.xsd", [])
    assert get_validator("xml-schema").config_model is XmlSchemaConfig


@pytest.mark.parametrize(
    "config",
    [{}, {"schema": ""}, {"schema": "a.xsd", "schema_type": "schematron"}, {"schema": "a.xsd", "extra": 1}],
)
def test_invalid_config_is_a_config_error(tmp_path: Path, config: dict) -> None:
    with pytest.raises(ConfigError, match="xml-schema"):
        XmlSchemaValidator().validate(context(tmp_path, b"<root/>", config, {"a.xsd": NO_NAMESPACE_XSD}))


@pytest.mark.parametrize(
    ("schema_type", "schema", "reason"),
    [
        ("xsd", b"<xs:schema", "not well-formed"),
        ("xsd", b"<notaschema/>", "does not compile"),
        ("xsd", f'<xs:schema {XS}><xs:element name="r" type="nothing"/></xs:schema>'.encode(), "does not compile"),
        ("xsd11", f'<xs:schema {XS}><xs:element name="r" type="nothing"/></xs:schema>'.encode(), "does not compile"),
        ("relaxng", b'<grammar xmlns="http://relaxng.org/ns/structure/1.0"/>', "does not compile"),
    ],
)
def test_a_bad_schema_is_a_config_error(tmp_path: Path, schema_type: str, schema: bytes, reason: str) -> None:
    with pytest.raises(ConfigError, match=rf"s\.xsd.*{reason}"):
        validate(tmp_path, b"<r/>", "s.xsd", {"s.xsd": schema}, schema_type=schema_type)


def test_a_schema_that_is_not_a_resource_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"'missing\.xsd' is not one of the step's resource files"):
        validate(tmp_path, b"<r/>", "missing.xsd", {"s.xsd": NO_NAMESPACE_XSD})
