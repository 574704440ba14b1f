"""People."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel

from app.schemas.common import Agency, Email, MyKad, PersonName, Phone, RequestModel


class UserCreate(RequestModel):
    mykad: MyKad
    name: PersonName
    email: Email | None = None
    phone: Phone | None = None
    agency: Agency


class UserOut(BaseModel):
    id: str
    mykad: str
    name: str
    email: str | None
    phone: str | None
    agency: str
    created_at: datetime
