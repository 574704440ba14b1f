"""The console's audit trail, for JDN administrators only (as GET /v1/audit-events): filters
(MyKad, action, from/until in the deployment's time zone), pages newest first, and the chain
verification of `python -m app audit verify`, run when asked (it reads the whole trail)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from app.routers.pages.console_base import (
    checked_form,
    current_admin,
    jdn_only,
    render_console,
    to_sign_in,
)
from app.routers.pages.web import csrf_refused, in_unit, runtime_of
from app.services.audit.verification import AuditVerification
from app.services.web.console import ConsoleAdmin
from app.services.web.console_audit import AuditFilter
from app.validation import normalise_mykad

router = APIRouter(include_in_schema=False)  # mounted under /console by console.py

PATH = "/console/audit"
_ACTION = re.compile(r"[a-z0-9_.]{1,64}")
_LOCAL_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2})?")
FIELDS = ("mykad", "action", "since", "until")


@router.get("/audit", response_class=HTMLResponse)
async def audit_trail(request: Request) -> Response:
    admin = await current_admin(request)
    if admin is None:
        return to_sign_in()
    if not admin.is_jdn:
        return jdn_only(request, admin)
    return await _page(request, admin, request.query_params)


@router.post("/audit/verification", response_class=HTMLResponse)
async def verify(request: Request) -> Response:
    form = await checked_form(request)
    if form is None:
        return csrf_refused(request)
    admin = await current_admin(request)
    if admin is None:
        return to_sign_in()
    if not admin.is_jdn:
        return jdn_only(request, admin)
    running = _verification_lock(request)
    if running.locked():
        return await _page(request, admin, {}, verification_busy=True)
    async with running:
        now = runtime_of(request).clock.now()
        result = await in_unit(request, lambda s: s.console_audit.verify(admin.caller.name, now))
    return await _page(request, admin, {}, verification=result)


async def _page(
    request: Request,
    admin: ConsoleAdmin,
    query: Mapping[str, str],
    *,
    verification: AuditVerification | None = None,
    verification_busy: bool = False,
) -> HTMLResponse:
    given = {name: query.get(name, "").strip() for name in FIELDS}
    zone = runtime_of(request).notices.zone
    wanted, errors = _filter(given, zone)
    before = _cursor(query.get("before", ""))
    events, older_than = [], None
    if not errors:
        page = await in_unit(request, lambda s: s.console_audit.page(wanted, before=before))
        events, older_than = page.events, page.older_than
    context: dict[str, Any] = {
        "title": "console.audit.title",
        "given": given,
        "errors": errors,
        "events": events,
        "older": _link(given, older_than) if older_than is not None else None,
        "newest": _link(given, None) if before is not None else None,
        "verification": verification,
        "verification_busy": verification_busy,
        "zone": zone.key,
    }
    return render_console(request, admin, "console/audit.html", context, 422 if errors else 200)


def _filter(given: Mapping[str, str], zone: ZoneInfo) -> tuple[AuditFilter, dict[str, str]]:
    """The filter asked for, or the problems to show next to the fields."""
    errors: dict[str, str] = {}
    mykad = None
    if given["mykad"]:
        try:
            mykad = normalise_mykad(given["mykad"])
        except ValueError:
            errors["mykad"] = "signin.mykad_invalid"
    action = given["action"] or None
    if action is not None and not _ACTION.fullmatch(action):
        errors["action"] = "console.audit.action_invalid"
    moments: dict[str, datetime | None] = {}
    for name in ("since", "until"):
        try:
            moments[name] = _moment(given[name], zone)
        except ValueError:
            moments[name] = None
            errors[name] = "console.audit.time_invalid"
    since, until = moments["since"], moments["until"]
    if since is not None and until is not None and since >= until:
        errors["until"] = "console.audit.until_before_since"
    return AuditFilter(mykad=mykad, action=action, since=since, until=until), errors


def _moment(value: str, zone: ZoneInfo) -> datetime | None:
    """A `datetime-local` field's value, in the deployment's zone; None if empty."""
    if not value:
        return None
    if not _LOCAL_TIME.fullmatch(value):
        raise ValueError("not a local time")
    moment = datetime.fromisoformat(value).replace(tzinfo=zone)  # ValueError: 2026-02-30
    if not 1970 <= moment.year <= 9000:  # far from datetime's ends, whatever the arithmetic
        raise ValueError("out of range")
    return moment


def _cursor(value: str) -> int | None:
    # ASCII digits only: str.isdigit() also takes "²", which int() refuses.
    return int(value) if value.isascii() and value.isdigit() and len(value) <= 18 else None


def _link(given: Mapping[str, str], before: int | None) -> str:
    fields = {name: value for name, value in given.items() if value}
    if before is not None:
        fields["before"] = str(before)
    return f"{PATH}?{urlencode(fields)}" if fields else PATH


def _verification_lock(request: Request) -> asyncio.Lock:
    """One verification at a time in this process: each reads the whole trail."""
    state = request.app.state
    if not hasattr(state, "audit_verification"):
        state.audit_verification = asyncio.Lock()
    lock: asyncio.Lock = state.audit_verification
    return lock
