"""The demo certification authority: root and issuing CA, keys sealed by the key store."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base
from app.models.base import timestamp


class CertificateAuthority(Base):
    __tablename__ = "certificate_authorities"

    # "root" or "issuing": there is one of each.
    name: Mapped[str] = mapped_column(String(16), primary_key=True)
    certificate_pem: Mapped[str] = mapped_column(Text)
    key_blob: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = timestamp()
