"""XML validation against XSD 1.0 (lxml), XSD 1.1 (xmlschema), RelaxNG (lxml) or a DTD (lxml): one ERROR finding per
violation, located by line and element path and coded by the library's error type.

The schema is one of the step's resource files, and everything it imports, includes or references resolves among the
step's resource files only: each is known by the URI of its name under RESOURCES_BASE_URI, so that a relative
reference finds its sibling as it would on disk, and a reference that names no resource file there is matched by its
file name alone if exactly one resource file has that name (a schema that imports `http://www.w3.org/2001/xml.xsd`
gets the step's `xml.xsd`). Anything else is refused before it is read, with one ERROR finding naming it, and the
document is not validated: no file outside the resources is opened and nothing is fetched.

The document is parsed by xml_safety.parse_untrusted (no DOCTYPE, no entities, bounded size and depth). Schema files
may declare internal entities (the W3C schemas do): they are expanded within libxml2's amplification limits, never an
external entity or DTD, and the libraries compile only what that parse made of them.
"""

from __future__ import annotations

import email.message
import hashlib
import io
import posixpath
import re
import threading
import urllib.request
import urllib.response
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Annotated, ClassVar, Literal
from urllib.parse import quote, unquote, urljoin, urlsplit

import xmlschema
from lxml import etree
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from xmlschema.validators import XsdAssert

from jobs.validators.base import ConfigError, ValidationContext, ValidationResult, parse_config
from jobs.validators.xml_safety import MAX_XML_BYTES, UnsafeXml, parse_untrusted
from schemas.enums import Severity
from schemas.envelopes import Location, Message, Metric

# Findings listed per document; the rest are counted in one INFO finding and in the schema_errors metric.
MAX_FINDINGS = 1000
MAX_MESSAGE_CHARS = 500
# Where resource files are, as far as the schema libraries know: under .invalid (RFC 2606), which resolves nowhere.
RESOURCES_BASE_URI = "https://resources.validibot.invalid/"
RELAXNG_NS = "http://relaxng.org/ns/structure/1.0"

SchemaType = Literal["xsd", "xsd11", "relaxng", "dtd"]
# A resource file's name: its path relative to the workflow file.
ResourceName = Annotated[str, StringConstraints(min_length=1)]


class XmlSchemaConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    schema_type: SchemaType = "xsd"
    # The name of the resource file that holds the schema (for `dtd`, the DTD itself).
    xml_schema: ResourceName = Field(alias="schema")
    # Names or globs, which applying the workflow resolves into the step's resource files.
    resources: list[ResourceName] = []


class _Unresolvable(Exception):
    """A reference the schema makes to something that is not one of the step's resource files."""


@dataclass
class _Resources:
    """The step's resource files as the schema libraries see them, and what went wrong while they read them: their
    callbacks cannot raise (libxml2 swallows the exception), so problems are noted here and raised after compiling."""

    files: dict[str, Path]
    # Why each reference was refused, in the order the library asked.
    refused: list[str] = field(default_factory=list)
    # Why a resource file the schema uses could not be read (a configuration problem).
    broken: list[str] = field(default_factory=list)

    def uri(self, name: str) -> str:
        return RESOURCES_BASE_URI + quote(name)

    def shown(self, url: str) -> str:
        """A URI as the user wrote it, near enough: a resource's name, or the URI itself."""
        return unquote(url[len(RESOURCES_BASE_URI) :]) if url.startswith(RESOURCES_BASE_URI) else url

    def name_for(self, url: str | None) -> str:
        """The resource file a (resolved) reference names: by its name, else by its file name if that is unique."""
        if not url:
            raise _Unresolvable("a reference without a system identifier is not followed")
        if url.startswith(RESOURCES_BASE_URI):
            # xmlschema leaves dot segments in; removed as RFC 3986 removes them, none climbs above the base.
            name = posixpath.normpath(unquote(urlsplit(url).path)).lstrip("/")
            if name in self.files:
                return name
        file_name = unquote(urlsplit(url).path).rsplit("/", 1)[-1]
        matches = sorted(n for n in self.files if PurePosixPath(n).name == file_name)
        if len(matches) == 1:
            return matches[0]
        why = f"several resource files are named {file_name!r}: {', '.join(matches)}" if matches else ""
        raise _Unresolvable(
            f"the schema refers to {self.shown(url)!r}, which is not one of the step's resource files"
            + (f" ({why})" if why else "")
            + "; imports and includes resolve only among them, and nothing is fetched"
        )

    def raise_problems(self) -> None:
        """What a library's callbacks noted, raised: a refused reference first, as it is what a schema that does not
        compile without it needs said."""
        if self.refused:
            raise _Unresolvable(self.refused[0])
        if self.broken:
            raise ConfigError(self.broken[0])

    def schema_document(self, name: str) -> etree._ElementTree:
        """A resource file as an XML tree: internal entities expanded, nothing external read, depth and size bounded;
        its URI is its base, so that relative references in it resolve among the resources."""
        path = self.files[name]
        size = path.stat().st_size
        if size > MAX_XML_BYTES:
            raise ConfigError(
                f"the schema file {name!r} is {size} bytes; at most {MAX_XML_BYTES} bytes of XML are read"
            )
        parser = etree.XMLParser(
            resolve_entities="internal", no_network=True, load_dtd=False, dtd_validation=False, huge_tree=False
        )
        parser.resolvers.add(_ResourceResolver(self, serve=self.schema_bytes))
        try:
            return etree.parse(io.BytesIO(path.read_bytes()), parser, base_url=self.uri(name))
        except etree.XMLSyntaxError as exc:
            raise ConfigError(f"the schema file {name!r} is not well-formed XML: {exc.msg}") from exc

    def schema_bytes(self, name: str) -> bytes:
        """A resource file as the XML its safe parse made of it: no DOCTYPE and no entities left for libxml2, which
        parses imported schemas with entity substitution on, to expand."""
        return etree.tostring(self.schema_document(name).getroot(), encoding="UTF-8")


class _ResourceResolver(etree.Resolver):
    """Answers libxml2's every request for a file: with a resource file (as `serve` makes it) or with a document that
    is nothing, noting why. It never declines, since lxml would then let libxml2 open the path itself."""

    def __init__(self, resources: _Resources, serve: Callable[[str], bytes]) -> None:
        super().__init__()
        self._resources = resources
        self._serve = serve

    def resolve(self, system_url: str | None, public_id: str | None, context: object) -> object:
        try:
            name = self._resources.name_for(system_url)
            return self.resolve_string(self._serve(name), context, base_url=self._resources.uri(name))
        except _Unresolvable as exc:
            self._resources.refused.append(str(exc))
        except ConfigError as exc:
            self._resources.broken.append(str(exc))
        return self.resolve_string(b"<refused/>", context, base_url=system_url)


class _ResourceHandler(urllib.request.BaseHandler):
    """xmlschema's only way to read anything: it is given an opener holding just this handler."""

    def __init__(self, resources: _Resources) -> None:
        self._resources = resources

    def default_open(self, request: urllib.request.Request) -> urllib.response.addinfourl:
        url = request.full_url
        try:
            name = self._resources.name_for(url)
            return self._response(self._resources.schema_bytes(name), self._resources.uri(name))
        except _Unresolvable as exc:
            self._resources.refused.append(str(exc))
        except ConfigError as exc:
            self._resources.broken.append(str(exc))
        # Not XML, which stops compiling there: a resource that cannot be read would only be warned of and skipped.
        return self._response(b"", url)

    @staticmethod
    def _response(data: bytes, url: str) -> urllib.response.addinfourl:
        return urllib.response.addinfourl(io.BytesIO(data), email.message.Message(), url)


@dataclass(frozen=True)
class _Violation:
    code: str
    text: str
    line: int | None
    column: int | None
    # The failing element where the library says which it is; else libxml2's path to it.
    element: etree._Element | None = None
    libxml2_path: str | None = None


# The first MAX_FINDINGS violations of a document and how many there are in all.
_Check = Callable[[etree._ElementTree, Callable[[], None]], tuple[list[_Violation], int]]


def _libxml2_check(validator: etree._Validator) -> _Check:
    # lxml keeps a validator's errors on the validator itself: one document at a time.
    lock = threading.Lock()

    def check(document: etree._ElementTree, check_budget: Callable[[], None]) -> tuple[list[_Violation], int]:
        with lock:
            validator.validate(document)
            errors = [e for e in validator.error_log if e.level >= etree.ErrorLevels.ERROR]
        violations = [
            _Violation(
                code=f"xml-schema.{error.type_name}",
                text=error.message,
                line=error.line or None,
                column=error.column or None,
                libxml2_path=error.path,
            )
            for error in errors[:MAX_FINDINGS]
        ]
        return violations, len(errors)

    return check


def _xmlschema_check(schema: xmlschema.XMLSchema11) -> _Check:
    def check(document: etree._ElementTree, check_budget: Callable[[], None]) -> tuple[list[_Violation], int]:
        violations: list[_Violation] = []
        count = 0
        for error in schema.iter_errors(document):
            # Validation is Python here, and yields between violations: where the inline budget can be checked.
            check_budget()
            count += 1
            if count <= MAX_FINDINGS:
                violations.append(_xmlschema_violation(error))
        return violations, count

    return check


def _xmlschema_violation(error: xmlschema.XMLSchemaValidationError) -> _Violation:
    text = error.reason or error.message
    if isinstance(error.validator, XsdAssert):
        text = f"{text}: {error.validator.path}"
    element = error.elem if isinstance(error.elem, etree._Element) else None
    # A content model's error is the parent's: the child where the model broke, if there is one, is where to look.
    children_error = isinstance(error, xmlschema.XMLSchemaChildrenValidationError)
    if children_error and element is not None and error.index < len(element):
        element = element[error.index]
    return _Violation(
        code=f"xml-schema.{type(error).__name__}",
        text=text,
        line=element.sourceline if element is not None else error.sourceline,
        column=None,
        element=element,
        libxml2_path=error.path,
    )


def _compile_error(name: str, resources: _Resources, error_log: etree._ListErrorLog) -> ConfigError:
    errors = [e for e in error_log if e.level >= etree.ErrorLevels.ERROR] or list(error_log)
    if not errors:
        return ConfigError(f"the schema {name!r} does not compile")
    first = errors[0]
    where = resources.shown(first.filename) if first.filename and first.filename != "<string>" else name
    return ConfigError(f"the schema {name!r} does not compile: {first.message} ({where}, line {first.line})")


def _compile_xsd(name: str, resources: _Resources) -> _Check:
    # lxml hands xs:import and xs:include to the resolvers of the parser that read the schema document.
    document = resources.schema_document(name)
    try:
        validator = etree.XMLSchema(document)
    except etree.XMLSchemaParseError as exc:
        resources.raise_problems()
        raise _compile_error(name, resources, exc.error_log) from exc
    resources.raise_problems()
    return _libxml2_check(validator)


def _compile_xsd11(name: str, resources: _Resources) -> _Check:
    opener = urllib.request.OpenerDirector()
    opener.add_handler(_ResourceHandler(resources))
    try:
        # The opener is xmlschema's only way to a file, the main schema's included; no fallback locations of its own.
        schema = xmlschema.XMLSchema11(resources.uri(name), opener=opener, defuse="always", use_fallback=False)
    except (xmlschema.XMLSchemaException, SyntaxError, ValueError, OSError) as exc:
        resources.raise_problems()
        reason = (getattr(exc, "message", None) or str(exc)).strip().splitlines()
        raise ConfigError(
            f"the schema {name!r} does not compile: {reason[0] if reason else type(exc).__name__}"
        ) from exc
    resources.raise_problems()
    return _xmlschema_check(schema)


def _compile_relaxng(name: str, resources: _Resources) -> _Check:
    # lxml's RelaxNG does not consult the schema parser's resolvers: libxml2 would read an include's href from disk
    # itself. Includes and external references are replaced by what they name here, and libxml2 reads nothing.
    grammar = _flattened_relaxng(name, resources, ())
    try:
        validator = etree.RelaxNG(grammar)
    except etree.RelaxNGParseError as exc:
        raise _compile_error(name, resources, exc.error_log) from exc
    return _libxml2_check(validator)


def _compile_dtd(name: str, resources: _Resources) -> _Check:
    # Loaded as the external subset of a document that is nothing else, so that its external entities go through the
    # resolver: lxml's DTD() leaves them to libxml2, which reads any file.
    loader = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=True, huge_tree=False)
    loader.resolvers.add(_ResourceResolver(resources, serve=lambda n: resources.files[n].read_bytes()))
    holder = b'<!DOCTYPE dtd SYSTEM "%s"><dtd/>' % resources.uri(name).encode()
    try:
        dtd = etree.parse(io.BytesIO(holder), loader).docinfo.externalDTD
    except etree.XMLSyntaxError as exc:
        resources.raise_problems()
        raise ConfigError(f"the DTD {name!r} cannot be read: {exc.msg}") from exc
    resources.raise_problems()
    if dtd is None:
        raise ConfigError(f"the DTD {name!r} cannot be read")
    return _libxml2_check(dtd)


_RNG_INCLUDE = f"{{{RELAXNG_NS}}}include"
_RNG_EXTERNAL_REF = f"{{{RELAXNG_NS}}}externalRef"
_RNG_GRAMMAR = f"{{{RELAXNG_NS}}}grammar"
_RNG_START = f"{{{RELAXNG_NS}}}start"
_RNG_DEFINE = f"{{{RELAXNG_NS}}}define"
_RNG_DIV = f"{{{RELAXNG_NS}}}div"


def _flattened_relaxng(name: str, resources: _Resources, including: tuple[str, ...]) -> etree._Element:
    """The RelaxNG schema in `name` with every include and externalRef replaced by what it names, as the simplification
    in the RelaxNG specification does it (sections 4.3, 4.6 and 4.7)."""
    root = resources.schema_document(name).getroot()
    for reference in list(root.iter(_RNG_INCLUDE, _RNG_EXTERNAL_REF)):
        href = reference.get("href")
        if href is None:
            raise ConfigError(f"the RelaxNG schema {name!r} has an {etree.QName(reference).localname} without an href")
        # .base honours xml:base, and is the file's own URI without one.
        target_name = resources.name_for(urljoin(reference.base or resources.uri(name), href.strip()))
        if target_name == name or target_name in including:
            raise ConfigError(f"the RelaxNG schema {target_name!r} includes itself")
        target = _flattened_relaxng(target_name, resources, (*including, name))
        # A file's data types are its own: what it does not name, it does not inherit from the file that refers to it.
        if target.get("datatypeLibrary") is None:
            target.set("datatypeLibrary", "")
        if target.get("ns") is None and (ns := reference.get("ns")) is not None:
            target.set("ns", ns)
        if reference.tag == _RNG_EXTERNAL_REF:
            parent = reference.getparent()
            if parent is None:
                root = target
            else:
                parent.replace(reference, target)
        else:
            _include(reference, target, target_name)
    return root


def _include(include: etree._Element, grammar: etree._Element, grammar_name: str) -> None:
    """The include becomes a div holding the grammar, less the start and defines the include overrides, as a div."""
    if grammar.tag != _RNG_GRAMMAR:
        raise ConfigError(f"the RelaxNG schema {grammar_name!r} is included, but its root element is not a grammar")
    overriding = list(_components(include))
    overridden = {_component_key(c) for c in overriding}
    components = list(_components(grammar))
    if missing := overridden - {_component_key(c) for c in components}:
        names = ", ".join(sorted(key or "start" for key in missing))
        raise ConfigError(f"an include of {grammar_name!r} overrides what it does not define: {names}")
    for component in components:
        if _component_key(component) in overridden:
            parent = component.getparent()
            assert parent is not None
            parent.remove(component)
    grammar.tag = _RNG_DIV
    include.tag = _RNG_DIV
    del include.attrib["href"]
    include.insert(0, grammar)


def _components(container: etree._Element) -> Iterable[etree._Element]:
    """A grammar's (or an include's) start and define elements, those in its divs included."""
    for child in container.iterchildren(_RNG_START, _RNG_DEFINE, _RNG_DIV):
        if child.tag == _RNG_DIV:
            yield from _components(child)
        else:
            yield child


def _component_key(component: etree._Element) -> str | None:
    """None for a start, else the name a define defines."""
    return None if component.tag == _RNG_START else (component.get("name") or "").strip()


_COMPILERS: dict[str, Callable[[str, _Resources], _Check]] = {
    "xsd": _compile_xsd,
    "xsd11": _compile_xsd11,
    "relaxng": _compile_relaxng,
    "dtd": _compile_dtd,
}

# Compiling is paid once per schema and its resource files' content: the UBL 2.1 invoice schema (2.9 MB in 16 files)
# takes about 0.1 s with lxml and far longer with xmlschema. Bounded, oldest out first.
MAX_COMPILED_SCHEMAS = 16
_compiled: OrderedDict[tuple[str, str, str], _Check] = OrderedDict()
_compiled_lock = threading.Lock()


def _compiled_check(schema_type: SchemaType, name: str, files: dict[str, Path]) -> _Check:
    digest = hashlib.sha256()
    for resource_name, path in sorted(files.items()):
        digest.update(f"{len(resource_name)}:{resource_name}".encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    key = (schema_type, name, digest.hexdigest())
    with _compiled_lock:
        if (check := _compiled.get(key)) is not None:
            _compiled.move_to_end(key)
            return check
    # Compiled outside the lock: two runs of one new schema may both compile it, and neither waits on the other.
    check = _COMPILERS[schema_type](name, _Resources(files))
    with _compiled_lock:
        _compiled[key] = check
        while len(_compiled) > MAX_COMPILED_SCHEMAS:
            _compiled.popitem(last=False)
    return check


_LIBXML2_STEP = re.compile(r"(?:(?P<prefix>[^:\[\]/]+):)?(?P<name>[^:\[\]/]+)(?:\[(?P<position>[0-9]+)\])?")


class _ElementPaths:
    """Element paths that say which element: each step its name as the document spells it (prefix and local name), with
    its position among the siblings of the same name where there are several. libxml2 spells an element in a default
    namespace as `*` numbered among all its siblings, which says little."""

    def __init__(self) -> None:
        self._steps: dict[etree._Element, str] = {}
        # Sibling lists, built once per parent: a document's violations are often many children of one parent.
        self._children: dict[tuple[etree._Element, str | None, str | None], list[etree._Element]] = {}

    def path(self, element: etree._Element) -> str:
        steps = []
        node: etree._Element | None = element
        while node is not None:
            steps.append(self._step(node))
            node = node.getparent()
        return "/" + "/".join(reversed(steps))

    def find(self, root: etree._Element, libxml2_path: str) -> etree._Element | None:
        """The element at a path as libxml2 spells it (xmlGetNodePath), or None for anything else."""
        steps = libxml2_path.split("/")
        if len(steps) < 2 or steps[0] != "":
            return None
        element = root
        for step in steps[2:]:
            match = _LIBXML2_STEP.fullmatch(step)
            if match is None:
                return None
            # `*` counts every element sibling; a name counts the siblings of that name and prefix.
            prefix, name = match["prefix"], match["name"]
            siblings = (
                self._children_of(element, None, None) if name == "*" else self._children_of(element, prefix, name)
            )
            position = int(match["position"] or 1)
            if not 0 < position <= len(siblings):
                return None
            element = siblings[position - 1]
        return element

    def _children_of(self, parent: etree._Element, prefix: str | None, name: str | None) -> list[etree._Element]:
        key = (parent, prefix, name)
        if key not in self._children:
            elements = list(parent.iterchildren(etree.Element))
            if name is not None:
                elements = [
                    e
                    for e in elements
                    if e.prefix == prefix and etree.QName(e).localname == name and (prefix or not _ns(e))
                ]
            self._children[key] = elements
        return self._children[key]

    def _step(self, element: etree._Element) -> str:
        parent = element.getparent()
        if parent is None:
            return _spelled(element)
        if element not in self._steps:
            siblings = self._children_of(parent, None, None)
            totals = Counter(sibling.tag for sibling in siblings)
            seen: Counter[str] = Counter()
            for sibling in siblings:
                step = _spelled(sibling)
                if totals[sibling.tag] > 1:
                    seen[sibling.tag] += 1
                    step = f"{step}[{seen[sibling.tag]}]"
                self._steps[sibling] = step
        return self._steps[element]


def _ns(element: etree._Element) -> str | None:
    return etree.QName(element).namespace


def _spelled(element: etree._Element) -> str:
    local = etree.QName(element).localname
    return f"{element.prefix}:{local}" if element.prefix else local


def _clip(text: str) -> str:
    text = text.strip()
    return text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 1] + "…"


class XmlSchemaValidator:
    id: ClassVar[str] = "xml-schema"
    type: ClassVar[str] = "xml-schema"
    version: ClassVar[str] = "1"
    mode: ClassVar[Literal["inline", "job"]] = "inline"
    config_model: ClassVar[type[BaseModel]] = XmlSchemaConfig

    def validate(self, context: ValidationContext) -> ValidationResult:
        config = parse_config(self, context.inputs)
        assert isinstance(config, XmlSchemaConfig)
        if config.xml_schema not in context.resources:
            raise ConfigError(f"the schema {config.xml_schema!r} is not one of the step's resource files")
        primary = context.primary()
        role = primary.ref.role
        try:
            check = _compiled_check(config.schema_type, config.xml_schema, context.resources)
        except _Unresolvable as exc:
            return _refused(
                Message(
                    severity=Severity.ERROR,
                    code="xml-schema.unresolvable_import",
                    text=_clip(str(exc)),
                    location=Location(file_role=role),
                )
            )
        context.check_budget()
        try:
            document = parse_untrusted(primary.path, what=primary.ref.name)
        except UnsafeXml as exc:
            return _refused(exc.as_message(role))
        context.check_budget()
        violations, count = check(document, context.check_budget)
        paths = _ElementPaths()
        root = document.getroot()
        messages = [_message(v, role, root, paths) for v in violations]
        if count > len(violations):
            messages.append(
                Message(
                    severity=Severity.INFO,
                    code="xml-schema.more_errors",
                    text=f"{count - len(violations)} more schema errors are not listed (the first {MAX_FINDINGS} are)",
                    location=Location(file_role=role),
                )
            )
        elements = sum(1 for _ in root.iter(etree.Element))
        return ValidationResult(
            messages=messages,
            metrics=[
                Metric(name="schema_errors", value=count, unit="count"),
                Metric(name="elements", value=elements, unit="count"),
            ],
        )


def _refused(message: Message) -> ValidationResult:
    """The document was not validated: one finding says why, and there are no metrics to report."""
    return ValidationResult(messages=[message])


def _message(violation: _Violation, role: str, root: etree._Element, paths: _ElementPaths) -> Message:
    element = violation.element
    if element is None and violation.libxml2_path:
        element = paths.find(root, violation.libxml2_path)
    path = paths.path(element) if element is not None else violation.libxml2_path
    return Message(
        severity=Severity.ERROR,
        code=violation.code,
        text=_clip(violation.text),
        location=Location(file_role=role, line=violation.line, column=violation.column, path=path),
    )
