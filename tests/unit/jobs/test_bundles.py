"""Bundles: a .zip submission unpacked safely into a workflow's input roles, or refused whole with one finding."""

from __future__ import annotations

import hashlib
import io
import stat
import struct
import zipfile
import zlib
from pathlib import Path

import pytest

from jobs.bundles import Bundle, BundleCaps, BundleRefused, unpack_bundle
from jobs.runtime import Assignment, execute
from schemas.enums import EnvelopeStatus, Severity
from schemas.envelopes import FileRef, InputContext, InputEnvelope, OrgRef, OutputEnvelope, ValidatorRef, WorkflowRef
from schemas.settings import Settings
from tests.fakes import FakeObjectStore
from tests.support import ENERGYPLUS_ROLES, as_input_roles, zip_bytes

CAPS = BundleCaps.from_settings(Settings())
MODEL = b"Version, 25.2;\nBuilding, Office;\n"
WEATHER = b"LOCATION,San Francisco Intl Ap,CA,USA,TMY3,724940,37.62,-122.40,-8.0,2.0\n"
# Offsets into a central directory file header (PKWARE APPNOTE 4.3.12).
CENTRAL_HEADER = b"PK\x01\x02"
CENTRAL_FLAGS, CENTRAL_CRC, CENTRAL_FILE_SIZE = 8, 16, 24


def bundle_file(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "bundle.zip"
    path.write_bytes(data)
    return path


def unpack(
    tmp_path: Path, data: bytes, roles: dict[str, list[str]] = ENERGYPLUS_ROLES, caps: BundleCaps = CAPS
) -> Bundle:
    return unpack_bundle(bundle_file(tmp_path, data), roles, tmp_path / "unpacked", caps)


def refusal(tmp_path: Path, data: bytes, roles: dict[str, list[str]] = ENERGYPLUS_ROLES, caps: BundleCaps = CAPS):
    """The refusal, after checking that nothing was left unpacked."""
    with pytest.raises(BundleRefused) as refused:
        unpack(tmp_path, data, roles, caps)
    dest = tmp_path / "unpacked"
    assert not dest.exists() or not any(dest.iterdir())
    return refused.value


def patched_central_header(data: bytes, offset: int, value: int) -> bytes:
    """`data` with a 32- or 16-bit field of its first central directory header replaced (a crafted zip)."""
    patched = bytearray(data)
    at = patched.index(CENTRAL_HEADER) + offset
    struct.pack_into("<H" if offset == CENTRAL_FLAGS else "<L", patched, at, value)
    return bytes(patched)


def symlink(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.create_system = 3  # Unix: the high 16 bits of external_attr are the file's mode
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


def test_each_role_gets_its_member_and_the_rest_is_ignored(tmp_path: Path) -> None:
    bundle = unpack(
        tmp_path,
        zip_bytes(
            [
                ("office/", b""),
                ("office/MODEL.IDF", MODEL),
                ("office/weather/sf.epw", WEATHER),
                ("office/README.txt", b"notes"),
                ("__MACOSX/office/._MODEL.IDF", b"resource fork"),
            ]
        ),
    )

    assert list(bundle.roles) == ["model", "weather"]
    model, weather = bundle.roles["model"], bundle.roles["weather"]
    assert (model.member, model.path.name, model.path.read_bytes()) == ("office/MODEL.IDF", "MODEL.IDF", MODEL)
    assert (model.size_bytes, model.sha256) == (len(MODEL), hashlib.sha256(MODEL).hexdigest())
    assert (weather.member, weather.path.read_bytes()) == ("office/weather/sf.epw", WEATHER)
    assert model.path.is_relative_to(tmp_path / "unpacked")
    assert bundle.ignored == ["office/README.txt", "__MACOSX/office/._MODEL.IDF"]


def test_a_role_without_patterns_is_never_required(tmp_path: Path) -> None:
    bundle = unpack(tmp_path, zip_bytes([("m.idf", MODEL)]), roles={"model": ["*.idf"], "notes": []})

    assert list(bundle.roles) == ["model"]


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("../evil.epw", "bundle_zip_slip"),
        ("office/../../evil.epw", "bundle_zip_slip"),
        ("office/../", "bundle_zip_slip"),
        ("/etc/evil.epw", "bundle_absolute_path"),
        ("C:/Windows/evil.epw", "bundle_absolute_path"),
        ("..\\evil.epw", "bundle_unsafe_name"),
        ("office//evil.epw", "bundle_unsafe_name"),
        ("office/./evil.epw", "bundle_unsafe_name"),
        ("evil\x1b[2J.epw", "bundle_unsafe_name"),
    ],
)
def test_a_member_named_out_of_the_bundle_refuses_it(tmp_path: Path, name: str, code: str) -> None:
    refused = refusal(tmp_path, zip_bytes([("model.idf", MODEL), (name, WEATHER)]))

    assert refused.code == code
    assert refused.member == name
    assert repr(name) in refused.text


def test_a_symlink_member_refuses_the_bundle(tmp_path: Path) -> None:
    refused = refusal(tmp_path, zip_bytes([("model.idf", MODEL), (symlink("weather.epw"), b"/etc/shadow")]))

    assert (refused.code, refused.member) == ("bundle_symlink", "weather.epw")
    assert refused.text == "member 'weather.epw' is a symbolic link; links are not accepted"


def test_a_zip_bomb_is_refused_by_its_compression_ratio(tmp_path: Path) -> None:
    zeros = b"\0" * (20 * 1024 * 1024)

    refused = refusal(tmp_path, zip_bytes([("model.idf", MODEL), ("weather.epw", zeros)]))

    assert (refused.code, refused.member) == ("bundle_ratio", "weather.epw")
    assert "more than 100 times its compressed size (VALIDIBOT_MAX_BUNDLE_RATIO)" in refused.text


def test_a_header_that_understates_a_bomb_stops_at_what_it_declares(tmp_path: Path) -> None:
    """Declared 1000 bytes (under every cap), deflating to 20 MiB: no more than the 1000 bytes is ever unpacked,
    and the checksum of the declared bytes fails, which refuses the bundle."""
    bomb = zip_bytes([("weather.epw", b"\0" * (20 * 1024 * 1024)), ("model.idf", MODEL)])

    refused = refusal(tmp_path, patched_central_header(bomb, CENTRAL_FILE_SIZE, 1000))

    assert refused.code == "bundle_damaged"
    assert "Bad CRC-32" in refused.text


def test_a_header_with_a_matching_checksum_still_yields_only_what_it_declares(tmp_path: Path) -> None:
    bomb = zip_bytes([("weather.epw", b"\0" * (20 * 1024 * 1024)), ("model.idf", MODEL)])
    lying = patched_central_header(bomb, CENTRAL_FILE_SIZE, 1000)

    bundle = unpack(tmp_path, patched_central_header(lying, CENTRAL_CRC, zlib.crc32(b"\0" * 1000)))

    assert bundle.roles["weather"].size_bytes == 1000
    assert bundle.roles["weather"].path.stat().st_size == 1000


@pytest.mark.parametrize(
    ("caps", "code"),
    [
        (BundleCaps(max_members=10, max_bytes=100_000, max_ratio=100), "bundle_too_large"),
        (BundleCaps(max_members=10, max_bytes=10**9, max_ratio=100), "bundle_ratio"),
    ],
)
def test_real_bytes_past_a_cap_stop_the_unpacking_whatever_the_header_said(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caps: BundleCaps, code: str
) -> None:
    """CPython's reader never returns more than a header declares; a reader that did (as other implementations have)
    is stopped by the bytes counted while writing, and what it had written is removed."""
    data = zip_bytes([("model.idf", MODEL), ("weather.epw", WEATHER)])
    endless = b"\0" * (4 * 1024 * 1024)
    monkeypatch.setattr(zipfile.ZipFile, "open", lambda self, info, *args, **kwargs: io.BytesIO(endless))

    refused = refusal(tmp_path, data, caps=caps)

    assert refused.code == code


def test_ten_thousand_members_are_refused_before_anything_is_unpacked(tmp_path: Path) -> None:
    members = [("model.idf", MODEL), ("weather.epw", WEATHER)] + [(f"notes/{i}.txt", b"") for i in range(9_998)]

    refused = refusal(tmp_path, zip_bytes(members))

    assert refused.code == "bundle_too_many_members"
    assert refused.text == ("the bundle has 10000 members; at most 1000 are accepted (VALIDIBOT_MAX_BUNDLE_MEMBERS)")
    assert not (tmp_path / "unpacked").exists()


def test_a_bundle_unpacking_past_the_byte_cap_is_refused_from_its_headers(tmp_path: Path) -> None:
    caps = BundleCaps(max_members=10, max_bytes=100, max_ratio=100)

    refused = refusal(tmp_path, zip_bytes([("model.idf", MODEL), ("weather.epw", WEATHER)]), caps=caps)

    assert refused.code == "bundle_too_large"
    assert refused.text == (
        f"the bundle unpacks to {len(MODEL) + len(WEATHER)} bytes; at most 100 bytes are accepted "
        "(VALIDIBOT_MAX_BUNDLE_BYTES)"
    )


@pytest.mark.parametrize(
    ("names", "text"),
    [
        (["weather.epw", "weather.epw"], "the bundle has member 'weather.epw' twice"),
        (
            ["Weather.epw", "weather.EPW"],
            "members 'Weather.epw' and 'weather.EPW' name the same file where case is ignored",
        ),
    ],
    ids=["same", "case"],
)
def test_duplicate_members_refuse_the_bundle(tmp_path: Path, names: list[str], text: str) -> None:
    refused = refusal(tmp_path, zip_bytes([("model.idf", MODEL), *((name, WEATHER) for name in names)]))

    assert (refused.code, refused.text) == ("bundle_duplicate_member", text)


def test_a_missing_role_refuses_the_bundle(tmp_path: Path) -> None:
    refused = refusal(tmp_path, zip_bytes([("model.idf", MODEL), ("notes.txt", b"")]))

    assert refused.code == "bundle_missing_role"
    assert refused.text == "the bundle has no member for role 'weather' (a file named like *.epw)"


def test_a_member_matching_two_roles_refuses_the_bundle(tmp_path: Path) -> None:
    roles = {"model": ["*.idf"], "reference": ["office*"]}

    refused = refusal(tmp_path, zip_bytes([("office.idf", MODEL)]), roles=roles)

    assert (refused.code, refused.member) == ("bundle_ambiguous_member", "office.idf")
    assert refused.text == "member 'office.idf' matches the roles 'model' and 'reference'; it may fill only one"


def test_a_role_matched_by_several_members_refuses_the_bundle(tmp_path: Path) -> None:
    refused = refusal(tmp_path, zip_bytes([("a.idf", MODEL), ("b/c.idf", MODEL), ("w.epw", WEATHER)]))

    assert refused.code == "bundle_ambiguous_role"
    assert refused.text == "role 'model' is matched by several members ('a.idf', 'b/c.idf'); keep one"


def test_an_encrypted_member_refuses_the_bundle(tmp_path: Path) -> None:
    data = patched_central_header(zip_bytes([("model.idf", MODEL), ("weather.epw", WEATHER)]), CENTRAL_FLAGS, 0x1)

    refused = refusal(tmp_path, data)

    assert (refused.code, refused.member) == ("bundle_encrypted", "model.idf")


def test_compression_other_than_deflate_is_refused(tmp_path: Path) -> None:
    data = zip_bytes([("model.idf", MODEL), ("weather.epw", WEATHER)], compression=zipfile.ZIP_BZIP2)

    assert refusal(tmp_path, data).code == "bundle_unsupported"


def test_a_file_named_zip_that_is_not_one_is_refused(tmp_path: Path) -> None:
    refused = refusal(tmp_path, b"Version, 25.2;\n")

    assert refused.code == "bundle_not_zip"
    assert refused.text.startswith("the submission is named .zip but is not a readable zip archive")


# -- Through the runtime: a bundle's roles reach the validator; a refusal is the step's one finding -------------

SCHEMA = {"type": "object", "required": ["name"]}
JSON_ROLES = {"document": ["*.json"], "notes": ["*.txt"]}


def run_step(name: str, data: bytes, roles: dict[str, list[str]]) -> OutputEnvelope:
    """One json-schema step on a submission named `name`, run by the runtime as a job would run it."""
    objects = FakeObjectStore()
    uri = f"gs://pipeline/runs/demo/r/submission/{name}"
    stored = objects.upload(uri, data, "application/octet-stream")
    output_uri = "gs://pipeline/runs/demo/0123456789abcdef01234567/steps/01-check/01-1/output.json"
    envelope = InputEnvelope(
        run_id="0123456789abcdef01234567",
        validator=ValidatorRef(id="json-schema", type="json-schema", version="1"),
        org=OrgRef(id="demo", name="Demo"),
        workflow=WorkflowRef(id="demo.wf", step_key="check", step_name="Check"),
        input_files=[
            FileRef(
                name=name,
                role="primary",
                uri=uri,
                size_bytes=len(data),
                sha256=hashlib.sha256(data).hexdigest(),
                generation=stored.generation,
            )
        ],
        inputs={"schema": SCHEMA},
        input_roles=as_input_roles(roles),
        context=InputContext(
            attempt_id="01-1",
            callback_id="c" * 43,
            expected_output_uri=output_uri,
            execution_bundle_uri=output_uri.removesuffix("output.json"),
            timeout_seconds=30,
        ),
    )
    written = execute(Assignment(envelope, "f" * 64, "ab" * 32), objects, Settings(signing_secret="s"))
    assert written is not None
    return written.output


def test_the_validator_checks_the_bundles_first_role() -> None:
    output = run_step("bundle.ZIP", zip_bytes([("notes.txt", b"hello"), ("data/doc.json", b"{}")]), JSON_ROLES)

    assert output.status == EnvelopeStatus.FAILED_VALIDATION
    [message] = output.messages
    assert message.text == "'name' is a required property"
    assert message.location is not None
    assert message.location.file_role == "document"


def test_a_refused_bundle_fails_the_step_with_one_finding() -> None:
    output = run_step("bundle.zip", zip_bytes([("../doc.json", b"{}"), ("notes.txt", b"")]), JSON_ROLES)

    assert output.status == EnvelopeStatus.FAILED_VALIDATION
    [message] = output.messages
    assert (message.severity, message.code) == (Severity.ERROR, "bundle_zip_slip")
    assert message.text == "member '../doc.json' leads out of the bundle's folder ('..')"
    assert message.location is not None
    assert (message.location.file_role, message.location.path) == ("bundle", "../doc.json")


def test_a_single_file_fills_the_first_role() -> None:
    output = run_step("doc.json", b'{"name": "office"}', JSON_ROLES)

    assert output.status == EnvelopeStatus.SUCCESS
    assert output.messages == []


def test_a_single_file_of_no_first_role_is_refused() -> None:
    output = run_step("notes.txt", b"hello", JSON_ROLES)

    assert output.status == EnvelopeStatus.FAILED_VALIDATION
    [message] = output.messages
    assert message.code == "bundle_unexpected_file"
    assert message.text == (
        "the submission 'notes.txt' is neither a .zip bundle nor a document file (a file named like *.json)"
    )
