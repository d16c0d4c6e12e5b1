from __future__ import annotations

import pytest

from schemas.paths import (
    InboxPath,
    StepObjectPath,
    UnsafeName,
    attempt_prefix,
    check_filename,
    inbox_object,
    parse_gs_uri,
    parse_object_name,
    run_id_for,
)

RUN = "0123456789abcdef01234567"


def test_inbox_names_parse_with_the_raw_filename() -> None:
    assert parse_object_name(inbox_object("demo", "json-basic", "a b.json")) == InboxPath(
        org="demo", workflow="json-basic", filename="a b.json"
    )
    # Deeper names still belong to the inbox: INTAKE refuses them as unsafe rather than ignoring them.
    assert parse_object_name("inbox/demo/json-basic/x/y.json").filename == "x/y.json"


@pytest.mark.parametrize("name", ["inbox/demo/json-basic/", "inbox/demo", "inbox//wf/a.json", "other/a.json", ""])
def test_names_outside_the_layout_are_ignored(name: str) -> None:
    assert parse_object_name(name) is None


def test_step_objects_round_trip_through_the_layout() -> None:
    prefix = attempt_prefix("demo", RUN, 3, "schema", "03-1")
    assert prefix == f"runs/demo/{RUN}/steps/03-schema/03-1/"
    assert parse_object_name(prefix + "input.json") == StepObjectPath(
        kind="input", org="demo", run_id=RUN, step_number=3, step_key="schema", attempt_id="03-1"
    )
    assert parse_object_name(prefix + "output.json").kind == "output"
    assert parse_object_name(prefix + "artifacts/report.html") is None
    assert parse_object_name(f"runs/demo/{RUN}/submission/input.json") is None
    assert parse_object_name("runs/demo/NOT-A-RUN-ID/steps/01-schema/01-1/input.json") is None


def test_run_id_is_stable_per_object_version() -> None:
    first = run_id_for("b", "inbox/demo/wf/a.json", 1)
    assert first == run_id_for("b", "inbox/demo/wf/a.json", 1)
    assert first != run_id_for("b", "inbox/demo/wf/a.json", 2)
    assert len(first) == 24


UNSAFE_NAMES = {
    "empty": "",
    "slash": "a/b",
    "backslash": "a\\b",
    "nul": "nul\x00.json",
    "dot": ".",
    "dotdot": "..",
    "leading-space": " lead.json",
    "trailing-space": "trail.json ",
    "newline": "ctl\n.json",
    "c1-next-line": "ctl\x85.json",
    "c1-csi": "ctl\x9b.json",
    "right-to-left-override": "invoice\u202egpj.exe",
    "left-to-right-isolate": "a\u2066b.json",
    "right-to-left-mark": "a\u200fb.json",
    "201-bytes": "x" * 201,
    "emoji-over-the-byte-limit": "\U0001f600" * 51,  # 51 characters, 204 bytes in UTF-8
}


@pytest.mark.parametrize("name", UNSAFE_NAMES.values(), ids=UNSAFE_NAMES.keys())
def test_unsafe_file_names_are_refused(name: str) -> None:
    with pytest.raises(UnsafeName):
        check_filename(name, max_bytes=200)


@pytest.mark.parametrize(
    "name", ["model.idf", "Résumé 2026.json", "a.b.c", "a..b.json", "...json", "x" * 200, "\U0001f600" * 50]
)
def test_plain_leaf_names_are_accepted(name: str) -> None:
    assert check_filename(name, max_bytes=200) == name


def test_the_name_limit_counts_utf8_bytes_and_says_so() -> None:
    with pytest.raises(UnsafeName, match="204 bytes long in UTF-8; the limit is 200 bytes"):
        check_filename("\U0001f600" * 51, max_bytes=200)


def test_gs_uri_parsing() -> None:
    assert parse_gs_uri("gs://bucket/a/b.json") == ("bucket", "a/b.json")
    for bad in ("gs://bucket", "s3://bucket/x", "gs:///x"):
        with pytest.raises(ValueError, match="gs://"):
            parse_gs_uri(bad)
