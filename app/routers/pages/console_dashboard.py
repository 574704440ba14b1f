"""The console's dashboard: the last hour in 5-minute buckets (signatures, failed checks,
locks) as a server-drawn SVG chart and a table, and the e-mail backlog for JDN. An agency
administrator sees their agency's people's events only; the backlog is the whole system's."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from app.routers.pages.console_base import current_admin, render_console, to_sign_in
from app.routers.pages.console_chart import grouped_bars
from app.routers.pages.web import in_unit, runtime_of
from app.services.web.console_dashboard import SERIES

router = APIRouter(include_in_schema=False)  # mounted under /console by console.py


@router.get("/dashboard", response_class=HTMLResponse)
async def dashboard(request: Request) -> Response:
    admin = await current_admin(request)
    if admin is None:
        return to_sign_in()
    runtime = runtime_of(request)
    now = runtime.clock.now()
    # An agency administrator is always bound to an agency; were one not, they would see nothing.
    agency = None if admin.is_jdn else (admin.agency or "")
    hour = await in_unit(
        request,
        lambda s: s.console_dashboard.last_hour(now, agency=agency, with_backlog=admin.is_jdn),
    )
    zone = runtime.notices.zone
    labels = [f"{bucket.start.astimezone(zone):%H:%M}" for bucket in hour.buckets]
    chart = grouped_bars(
        [(label, bucket.counts) for label, bucket in zip(labels, hour.buckets, strict=True)],
        list(SERIES),
    )
    context = {
        "title": "console.dash.title",
        "hour": hour,
        "rows": list(zip(labels, hour.buckets, strict=True)),
        "series": list(SERIES),
        "chart": chart,
        "now": now,
        "scope": agency,
    }
    return render_console(request, admin, "console/dashboard.html", context)
