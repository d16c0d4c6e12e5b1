"""The one typed shape every object-finalize delivery is decoded into (DESIGN §5)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict


class ObjectFinalized(BaseModel):
    model_config = ConfigDict(frozen=True)
    bucket: str
    name: str
    generation: int
    size: int
    content_type: str | None = None
    md5_hash: str | None = None
    crc32c: str | None = None
    time_created: datetime | None = None
    metadata: dict[str, str] = {}
