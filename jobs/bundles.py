"""A .zip submission unpacked into a workflow's input roles (DESIGN §12), refused whole when anything in it is unsafe.

Role rules:
- a role's patterns are globs matched against a member's file name (its last path component) ignoring case, so a
  bundle may keep its files in a folder, and `model.IDF` is a `*.idf`;
- every role with at least one pattern must be filled by exactly one member; a role with no patterns is never
  filled and never missing;
- a member that matches two roles is refused (its role would be a guess); a member that matches none is not
  unpacked, and is listed in `Bundle.ignored`; so are macOS Finder's `__MACOSX/` resource forks, which would
  otherwise shadow every member they copy (`__MACOSX/._model.idf` matches `*.idf`).

Safety: every member is checked before anything is written, whether or not it is unpacked: no absolute path, drive
letter, backslash, `..`, empty or `.` component or unsafe character; no symlink, no encryption, no compression other
than stored or deflated; no duplicate name (ignoring case and Unicode normalization, as macOS and Windows file systems
do); at most `max_members` members, `max_bytes` unpacked in all, and no member unpacking to more than `max_ratio`
times its compressed size. The sizes are checked as declared first, and then on the bytes actually written, because
a crafted header may lie. On any refusal, nothing this call wrote is left in `dest`.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
import shutil
import stat
import unicodedata
import zipfile
import zlib
from dataclasses import dataclass
from functools import partial
from pathlib import Path, PurePosixPath

from schemas.enums import Severity
from schemas.envelopes import Location, Message
from schemas.paths import UnsafeName, check_filename
from schemas.settings import Settings

# The longest path component accepted, in UTF-8 bytes: what file systems allow.
MAX_COMPONENT_BYTES = 255
# A member this small cannot be a bomb however well it compresses (2 KB of blanks in a model compresses over 100 to
# 1), so the ratio applies only past it.
RATIO_FLOOR_BYTES = 1024 * 1024
COPY_CHUNK_BYTES = 64 * 1024
# Every zip tool writes these; other methods (bzip2, lzma, deflate64) are rare and only widen the attack surface.
SUPPORTED_COMPRESSION = frozenset({zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED})
# General purpose flag bits: encrypted (0), strongly encrypted (6).
ENCRYPTED_FLAGS = 0x1 | 0x40
MACOS_METADATA_FOLDER = "__MACOSX"
_DRIVE_LETTER = re.compile(r"^[A-Za-z]:")


class BundleRefused(Exception):
    """The bundle cannot be used: `code` is the finding's stable code, `text` says why, `member` names the member."""

    def __init__(self, code: str, text: str, member: str | None = None) -> None:
        super().__init__(text)
        self.code = code
        self.text = text
        self.member = member

    def as_message(self) -> Message:
        return Message(
            severity=Severity.ERROR,
            code=self.code,
            text=self.text,
            location=Location(file_role="bundle", path=self.member),
        )


@dataclass(frozen=True)
class BundleCaps:
    max_members: int
    max_bytes: int
    max_ratio: float

    @classmethod
    def from_settings(cls, settings: Settings) -> BundleCaps:
        return cls(settings.max_bundle_members, settings.max_bundle_bytes, settings.max_bundle_ratio)


@dataclass(frozen=True)
class UnpackedMember:
    member: str  # its full name in the archive
    path: Path
    size_bytes: int
    sha256: str  # of the unpacked bytes


@dataclass(frozen=True)
class Bundle:
    roles: dict[str, UnpackedMember]  # in the order the roles were declared
    ignored: list[str]  # members that matched no role, not unpacked


def matches_role(file_name: str, patterns: list[str]) -> bool:
    folded = file_name.casefold()
    return any(fnmatch.fnmatchcase(folded, pattern.casefold()) for pattern in patterns)


def unpack_bundle(zip_path: Path, roles: dict[str, list[str]], dest: Path, caps: BundleCaps) -> Bundle:
    """Unpack the one member of each role into `dest` (a new or empty folder), or raise BundleRefused."""
    try:
        archive = zipfile.ZipFile(zip_path)
    # A crafted directory may also ask for an impossible seek (OSError), hold a name that is not the UTF-8 it claims
    # (ValueError) or a zip version from the future (NotImplementedError).
    except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError) as exc:
        raise BundleRefused(
            "bundle_not_zip", f"the submission is named .zip but is not a readable zip archive: {exc}"
        ) from exc
    with archive:
        members = archive.infolist()
        # Counted from the parsed central directory, not the end record's count, which a crafted zip may understate;
        # parsing it is bounded by the submission's size cap.
        if len(members) > caps.max_members:
            raise BundleRefused(
                "bundle_too_many_members",
                f"the bundle has {len(members)} members; at most {caps.max_members} are accepted "
                "(VALIDIBOT_MAX_BUNDLE_MEMBERS)",
            )
        for info in members:
            _check_member(info, caps)
        files = [info for info in members if not info.is_dir()]
        _check_unique(members)
        _check_total_size(files, caps)
        chosen, ignored = _assign_roles(files, roles)
        return Bundle(roles=_extract(archive, chosen, dest, caps), ignored=ignored)


def _check_member(info: zipfile.ZipInfo, caps: BundleCaps) -> None:
    # As stored: zipfile's `filename` is cut at a NUL, which would hide what follows it from these checks.
    name = info.orig_filename
    if "\\" in name:
        raise BundleRefused("bundle_unsafe_name", f"member {name!r} has a backslash in its name (a Windows path)", name)
    if name.startswith("/") or _DRIVE_LETTER.match(name):
        raise BundleRefused("bundle_absolute_path", f"member {name!r} has an absolute path", name)
    components = name.removesuffix("/").split("/")
    if ".." in components:
        raise BundleRefused("bundle_zip_slip", f"member {name!r} leads out of the bundle's folder ('..')", name)
    for component in components:
        try:
            check_filename(component, MAX_COMPONENT_BYTES)
        except UnsafeName as exc:
            raise BundleRefused("bundle_unsafe_name", f"member {name!r} has an unsafe name: {exc}", name) from exc
    if stat.S_ISLNK(info.external_attr >> 16):
        raise BundleRefused("bundle_symlink", f"member {name!r} is a symbolic link; links are not accepted", name)
    if info.flag_bits & ENCRYPTED_FLAGS:
        raise BundleRefused("bundle_encrypted", f"member {name!r} is encrypted; submit an unencrypted zip", name)
    if info.header_offset < 0:
        raise BundleRefused("bundle_damaged", f"member {name!r} is placed before the start of the bundle", name)
    if info.compress_type not in SUPPORTED_COMPRESSION:
        raise BundleRefused(
            "bundle_unsupported",
            f"member {name!r} uses zip compression method {info.compress_type}; only stored and deflated are accepted",
            name,
        )
    if _over_ratio(info.file_size, info.compress_size, caps):
        raise _ratio_refusal(info, info.file_size, caps)


def _check_unique(members: list[zipfile.ZipInfo]) -> None:
    seen: dict[str, str] = {}
    for info in members:
        key = unicodedata.normalize("NFC", info.filename.removesuffix("/")).casefold()
        first = seen.get(key)
        if first is None:
            seen[key] = info.filename
            continue
        if first == info.filename:
            text = f"the bundle has member {first!r} twice"
        else:
            text = f"members {first!r} and {info.filename!r} name the same file where case is ignored"
        raise BundleRefused("bundle_duplicate_member", text, info.filename)


def _check_total_size(files: list[zipfile.ZipInfo], caps: BundleCaps) -> None:
    declared = sum(info.file_size for info in files)
    if declared > caps.max_bytes:
        raise _size_refusal(f"{declared} bytes", caps)


def _assign_roles(
    files: list[zipfile.ZipInfo], roles: dict[str, list[str]]
) -> tuple[dict[str, zipfile.ZipInfo], list[str]]:
    by_role: dict[str, list[zipfile.ZipInfo]] = {role: [] for role in roles}
    ignored = []
    for info in files:
        path = PurePosixPath(info.filename)
        matched = [role for role, patterns in roles.items() if matches_role(path.name, patterns)]
        if MACOS_METADATA_FOLDER in path.parts[:-1] or not matched:
            ignored.append(info.filename)
        elif len(matched) > 1:
            raise BundleRefused(
                "bundle_ambiguous_member",
                f"member {info.filename!r} matches the roles {' and '.join(map(repr, matched))}; it may fill only one",
                info.filename,
            )
        else:
            by_role[matched[0]].append(info)
    for role, found in by_role.items():
        if len(found) > 1:
            names = ", ".join(repr(info.filename) for info in found)
            raise BundleRefused(
                "bundle_ambiguous_role", f"role {role!r} is matched by several members ({names}); keep one"
            )
        if not found and roles[role]:
            raise BundleRefused(
                "bundle_missing_role",
                f"the bundle has no member for role {role!r} (a file named like {' or '.join(roles[role])})",
            )
    return {role: found[0] for role, found in by_role.items() if found}, ignored


def _extract(
    archive: zipfile.ZipFile, chosen: dict[str, zipfile.ZipInfo], dest: Path, caps: BundleCaps
) -> dict[str, UnpackedMember]:
    """Each role's member in a folder of its own (two roles' members may share a file name), within the caps."""
    made: list[Path] = []
    unpacked = {}
    budget = caps.max_bytes
    try:
        for index, (role, info) in enumerate(chosen.items()):
            folder = dest / str(index)
            folder.mkdir(parents=True)
            made.append(folder)
            target = folder / PurePosixPath(info.filename).name
            unpacked[role] = _copy_capped(archive, info, target, budget, caps)
            budget -= unpacked[role].size_bytes
    except (zipfile.BadZipFile, EOFError, zlib.error, UnicodeDecodeError) as exc:
        _remove(made)
        raise BundleRefused("bundle_damaged", f"the bundle is damaged: {exc}") from exc
    except NotImplementedError as exc:
        _remove(made)
        raise BundleRefused(
            "bundle_unsupported", f"the bundle uses a zip feature that is not supported: {exc}"
        ) from exc
    except BundleRefused:
        _remove(made)
        raise
    return unpacked


def _copy_capped(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, budget: int, caps: BundleCaps
) -> UnpackedMember:
    digest = hashlib.sha256()
    written = 0
    with archive.open(info) as source, target.open("xb") as sink:
        for chunk in iter(partial(source.read, COPY_CHUNK_BYTES), b""):
            written += len(chunk)
            if written > budget:
                raise _size_refusal(f"more than {caps.max_bytes} bytes, more than its headers declare", caps)
            if _over_ratio(written, info.compress_size, caps):
                raise _ratio_refusal(info, written, caps)
            sink.write(chunk)
            digest.update(chunk)
    return UnpackedMember(member=info.filename, path=target, size_bytes=written, sha256=digest.hexdigest())


def _over_ratio(unpacked: int, compressed: int, caps: BundleCaps) -> bool:
    return unpacked > RATIO_FLOOR_BYTES and unpacked > max(compressed, 1) * caps.max_ratio


def _ratio_refusal(info: zipfile.ZipInfo, unpacked: int, caps: BundleCaps) -> BundleRefused:
    return BundleRefused(
        "bundle_ratio",
        f"member {info.filename!r} unpacks from {info.compress_size} to {unpacked} bytes, more than "
        f"{caps.max_ratio:g} times its compressed size (VALIDIBOT_MAX_BUNDLE_RATIO): a zip bomb",
        info.filename,
    )


def _size_refusal(unpacked: str, caps: BundleCaps) -> BundleRefused:
    return BundleRefused(
        "bundle_too_large",
        f"the bundle unpacks to {unpacked}; at most {caps.max_bytes} bytes are accepted (VALIDIBOT_MAX_BUNDLE_BYTES)",
    )


def _remove(folders: list[Path]) -> None:
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)
