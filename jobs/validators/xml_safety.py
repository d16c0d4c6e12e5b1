"""Reading untrusted XML (DESIGN §9): no entity is expanded, no DTD is loaded, nothing is fetched or read from disk,
the depth and size are bounded. Every XML-reading validator parses submissions and resource files through here.

A submission with a document type declaration is refused outright: it is the vehicle of every entity attack (XXE,
billion laughs) and of DTD loading, and a document that needs one to validate is validated against a DTD given as
a resource file instead (the `xml-schema` validator's `dtd` schema type).
"""

from __future__ import annotations

import io
from pathlib import Path

from lxml import etree

from schemas.enums import Severity
from schemas.envelopes import Location, Message

# libxml2's own limit without XML_PARSE_HUGE: deeper documents are refused as malformed.
MAX_DEPTH = 256
MAX_XML_BYTES = 64 * 1024 * 1024


class UnsafeXml(ValueError):
    """XML that is refused before anything reads it further: one ERROR finding says why."""

    def __init__(self, code: str, text: str, line: int | None = None, column: int | None = None) -> None:
        super().__init__(text)
        self.code, self.text, self.line, self.column = code, text, line, column

    def as_message(self, file_role: str = "primary") -> Message:
        location = Location(file_role=file_role, line=self.line, column=self.column)
        return Message(severity=Severity.ERROR, code=self.code, text=self.text, location=location)


class _Refuse(etree.Resolver):
    """Asked for anything (an external entity, a DTD, an imported schema, a document()), it refuses."""

    def resolve(self, system_url: str | None, public_id: str | None, context: object) -> object:
        raise UnsafeXml("xml.external_reference", f"a reference to {system_url or public_id!r} is not followed")


def safe_parser() -> etree.XMLParser:
    parser = etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_blank_text=False,
    )
    parser.resolvers.add(_Refuse())
    return parser


def parse_untrusted(path: Path, *, what: str = "the document") -> etree._ElementTree:
    """The document, parsed with `safe_parser`; UnsafeXml for a DOCTYPE, an oversize file or malformed XML."""
    size = path.stat().st_size
    if size > MAX_XML_BYTES:
        raise UnsafeXml("xml.too_large", f"{what} is {size} bytes; at most {MAX_XML_BYTES} bytes of XML are read")
    try:
        # From the bytes, not the path: the parser has no file name to resolve anything against.
        tree = etree.parse(io.BytesIO(path.read_bytes()), safe_parser())
    except etree.XMLSyntaxError as exc:
        line, column = exc.position if exc.position else (None, None)
        raise UnsafeXml("xml.malformed", f"{what} is not well-formed XML: {exc.msg}", line, column) from exc
    if tree.docinfo.doctype:
        raise UnsafeXml(
            "xml.doctype_refused",
            f"{what} has a document type declaration ({tree.docinfo.doctype}); DTDs and entities are not accepted",
        )
    return tree
