"""Shared column helpers for the ORM models."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from app.db import UtcDateTime


def new_id() -> str:
    return str(uuid.uuid4())


def id_column() -> Mapped[str]:
    return mapped_column(String(36), primary_key=True, default=new_id)


def timestamp(*, nullable: bool = False) -> Mapped[datetime]:
    return mapped_column(UtcDateTime(), nullable=nullable)
