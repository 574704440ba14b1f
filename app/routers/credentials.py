"""Routes to come (see the open issues); registered in create_app already."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
