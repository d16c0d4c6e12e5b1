"""Cloud Storage adapter of the ObjectStore port: create-only writes, reads pinned to a generation."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from google.api_core import exceptions as gexc
from google.cloud import storage

from schemas.objects import ObjectFinalized
from schemas.paths import IDEMPOTENCY_METADATA_KEY, gs_uri, parse_gs_uri
from schemas.signing import SIGNATURE_METADATA_KEY
from store.ports import ObjectConflict, ObjectMissing, ObjectTooLarge, StoredObject

SHA256_METADATA_KEY = "sha256"


def _metadata(sha256: str, signature: str | None) -> dict[str, str]:
    return {SHA256_METADATA_KEY: sha256} | ({SIGNATURE_METADATA_KEY: signature} if signature else {})


def _stored(uri: str, blob: storage.Blob) -> StoredObject:
    metadata = blob.metadata or {}
    return StoredObject(
        uri=uri,
        generation=int(blob.generation),
        size=int(blob.size),
        sha256=metadata.get(SHA256_METADATA_KEY),
        signature=metadata.get(SIGNATURE_METADATA_KEY),
        idempotency_record=metadata.get(IDEMPOTENCY_METADATA_KEY),
    )


def finalized_event(blob: storage.Blob) -> ObjectFinalized:
    """The finalize event the platform delivers for this object version (fields as a notification carries them),
    for drivers that upload and deliver events themselves: tests and the benchmark."""
    return ObjectFinalized(
        bucket=blob.bucket.name,
        name=blob.name,
        generation=int(blob.generation),
        size=int(blob.size),
        content_type=blob.content_type,
        md5_hash=blob.md5_hash,
        crc32c=blob.crc32c,
        metadata=blob.metadata or {},
    )


class _Verifier:
    """A write-only file wrapper that hashes what passes through and refuses more than `limit` bytes."""

    def __init__(self, sink: BinaryIO, limit: int) -> None:
        self._sink = sink
        self._limit = limit
        self.size = 0
        self.digest = hashlib.sha256()

    def write(self, chunk: bytes) -> int:
        self.size += len(chunk)
        if self.size > self._limit:
            raise ObjectTooLarge(f"more than {self._limit} bytes")
        self.digest.update(chunk)
        return self._sink.write(chunk)


class GcsObjectStore:
    def __init__(self, client: storage.Client) -> None:
        self._client = client

    def _blob(self, uri: str, generation: int | None = None) -> storage.Blob:
        bucket, name = parse_gs_uri(uri)
        return self._client.bucket(bucket).blob(name, generation=generation)

    def write_new(self, uri: str, data: bytes, content_type: str, signature: str | None = None) -> StoredObject:
        """Create `uri` with `data`; raise ObjectConflict if it exists. Never overwrites."""
        return self._upload(uri, data, content_type, signature, if_generation_match=0)

    def replace_version(
        self, uri: str, data: bytes, content_type: str, *, generation: int, signature: str
    ) -> StoredObject:
        return self._upload(uri, data, content_type, signature, if_generation_match=generation)

    def _upload(
        self, uri: str, data: bytes, content_type: str, signature: str | None, *, if_generation_match: int
    ) -> StoredObject:
        blob = self._blob(uri)
        sha256 = hashlib.sha256(data).hexdigest()
        blob.metadata = _metadata(sha256, signature)
        try:
            blob.upload_from_string(data, content_type=content_type, if_generation_match=if_generation_match)
        except gexc.PreconditionFailed as exc:
            raise ObjectConflict(uri) from exc
        return StoredObject(uri, int(blob.generation), len(data), sha256, signature)

    def write_new_file(self, uri: str, path: Path, content_type: str | None, sha256: str) -> StoredObject:
        blob = self._blob(uri)
        blob.metadata = _metadata(sha256, None)
        try:
            blob.upload_from_filename(str(path), content_type=content_type, if_generation_match=0)
        except gexc.PreconditionFailed as exc:
            raise ObjectConflict(uri) from exc
        return StoredObject(uri=uri, generation=int(blob.generation), size=path.stat().st_size, sha256=sha256)

    def upload_stream(
        self, uri: str, source: BinaryIO, content_type: str, metadata: dict[str, str] | None = None
    ) -> StoredObject:
        blob = self._blob(uri)
        blob.metadata = metadata or None
        blob.upload_from_file(source, content_type=content_type)
        return _stored(uri, blob)

    def stat(self, uri: str, generation: int | None = None) -> StoredObject | None:
        bucket, name = parse_gs_uri(uri)
        blob = self._client.bucket(bucket).get_blob(name, generation=generation)
        return None if blob is None else _stored(uri, blob)

    def copy_version(
        self, uri: str, generation: int, dest_uri: str, metadata: dict[str, str], content_type: str | None
    ) -> StoredObject:
        source, dest = self._blob(uri, generation), self._blob(dest_uri)
        # A rewrite whose destination names some metadata copies only what it names: the content type too.
        dest.metadata = metadata
        dest.content_type = content_type or "application/octet-stream"
        try:
            token, _, _ = dest.rewrite(source)
            while token is not None:  # large objects are copied in several calls
                token, _, _ = dest.rewrite(source, token=token)
        except gexc.NotFound as exc:
            raise ObjectMissing(f"{uri} (generation {generation})") from exc
        return _stored(dest_uri, dest)

    def delete(self, uri: str, generation: int | None = None) -> None:
        with contextlib.suppress(gexc.NotFound):
            self._blob(uri, generation).delete()

    def uris_under(self, prefix_uri: str) -> list[str]:
        bucket, prefix = parse_gs_uri(prefix_uri)
        return [gs_uri(bucket, blob.name) for blob in self._client.list_blobs(bucket, prefix=prefix)]

    def stream(self, uri: str, generation: int | None = None, chunk_bytes: int = 1 << 20) -> Iterator[bytes]:
        blob = self._blob(uri, generation)
        if not blob.exists():
            raise ObjectMissing(f"{uri} (generation {generation})")

        def chunks() -> Iterator[bytes]:
            with blob.open("rb", chunk_size=chunk_bytes) as reader:
                yield from iter(lambda: reader.read(chunk_bytes), b"")

        return chunks()

    def read_bytes(self, uri: str, generation: int | None, max_bytes: int) -> bytes:
        """The bytes of exactly that generation (None: the live one); ObjectTooLarge past `max_bytes`."""
        try:
            data = self._blob(uri, generation).download_as_bytes(start=0, end=max_bytes)
        except gexc.NotFound as exc:
            raise ObjectMissing(f"{uri} (generation {generation})") from exc
        if len(data) > max_bytes:
            raise ObjectTooLarge(f"{uri} is larger than {max_bytes} bytes")
        return data

    def download_hashed(self, uri: str, generation: int, dest: Path, max_bytes: int) -> tuple[int, str]:
        """Stream one generation to `dest` (renamed into place only when complete); return size and sha256."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, partial = tempfile.mkstemp(dir=dest.parent, prefix=".partial-")
        try:
            with os.fdopen(fd, "wb") as sink:
                verifier = _Verifier(sink, max_bytes)
                self._blob(uri, generation).download_to_file(verifier)
            os.replace(partial, dest)
        except gexc.NotFound as exc:
            raise ObjectMissing(f"{uri} (generation {generation})") from exc
        finally:
            if os.path.exists(partial):
                os.unlink(partial)
        return verifier.size, verifier.digest.hexdigest()
