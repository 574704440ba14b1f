"""The console's bulk move of token users (JDN, as `POST /v1/roaming-enrolments`): upload the
CSV, watch the progress bar (static/console/progress.js polls the JSON progress; without
scripts the page refreshes itself), download the per-row report as CSV.

The job is kept in the database (app.services.web.console_enrolments): this process enrols
the upload in a background task, a batch per unit of work on a worker thread, and any
process answers its progress and report."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.datastructures import UploadFile

from app.errors import ValidationFailed
from app.routers.pages.console_base import (
    current_admin,
    jdn_only,
    redirect,
    render_console,
    to_sign_in,
)
from app.routers.pages.web import (
    CSRF_FIELD,
    csrf_ok,
    csrf_refused,
    in_runtime_unit,
    in_unit,
    is_row_id,
    runtime_of,
)
from app.runtime import Runtime
from app.services.web.console import ConsoleAdmin
from app.services.web.console_enrolments import (
    EnrolmentJob,
    EnrolmentJobStopped,
    batches,
    read_upload,
)
from app.units import Services

router = APIRouter()
log = logging.getLogger("roamsign.console")


def _tasks(request: Request) -> set[asyncio.Task[None]]:
    """This process's running uploads (a reference each, so none is collected mid-way)."""
    state = request.app.state
    if not hasattr(state, "console_enrolment_tasks"):
        state.console_enrolment_tasks = set()
    tasks: set[asyncio.Task[None]] = state.console_enrolment_tasks
    return tasks


async def _jdn(request: Request) -> ConsoleAdmin | Response:
    admin = await current_admin(request)
    if admin is None:
        return to_sign_in()
    if not admin.is_jdn:
        return jdn_only(request, admin)
    return admin


@router.get("/enrolments", response_class=HTMLResponse)
async def upload_form(request: Request) -> Response:
    admin = await _jdn(request)
    if isinstance(admin, Response):
        return admin
    return _upload_page(request, admin, {})


def _upload_page(
    request: Request, admin: ConsoleAdmin, errors: dict[str, str], status: int = 200
) -> HTMLResponse:
    context = {"title": "console.enrolments.title", "errors": errors}
    return render_console(request, admin, "console/enrolments.html", context, status)


@router.post("/enrolments", response_class=HTMLResponse)
async def upload(request: Request) -> Response:
    form = await request.form(max_files=1, max_fields=4)
    sent = form.get(CSRF_FIELD)
    if not csrf_ok(request, {CSRF_FIELD: sent if isinstance(sent, str) else ""}):
        return csrf_refused(request)
    admin = await _jdn(request)
    if isinstance(admin, Response):
        return admin
    upload = form.get("csv")
    data = await upload.read() if isinstance(upload, UploadFile) else b""
    try:
        mykads = read_upload(data)
    except ValidationFailed as refused:
        error = "console.enrolments.empty" if data else "console.enrolments.no_file"
        if refused.detail.startswith("the file is not"):
            error = "console.enrolments.not_csv"
        return _upload_page(request, admin, {"csv": error}, 422)
    runtime = runtime_of(request)
    now = runtime.clock.now()
    actor, owner = admin.caller.name, admin.user.id
    job_id = await in_unit(
        request, lambda s: s.console_enrolments.start(owner, actor, len(mykads), now)
    )
    task = asyncio.create_task(_enrol(runtime, job_id, mykads, actor))
    tasks = _tasks(request)
    tasks.add(task)
    task.add_done_callback(tasks.discard)
    return redirect(f"/console/enrolments/{job_id}")


async def _enrol(runtime: Runtime, job_id: str, mykads: list[str], actor: str) -> None:
    """Enrol the upload a batch (one transaction, with the job's progress) at a time. If this
    process stops half-way, the job shows as interrupted after a while (STALE_AFTER)."""
    done = 0
    try:
        for batch in batches(mykads):
            await in_runtime_unit(runtime, _batch(job_id, actor, batch, runtime.clock.now()))
            done += len(batch)
    except EnrolmentJobStopped:
        log.warning("pages.console.enrolment_stopped", extra={"job": job_id, "done": done})
    except Exception:
        log.exception("pages.console.enrolment_failed", extra={"job": job_id, "done": done})
        now = runtime.clock.now()
        try:
            await in_runtime_unit(runtime, lambda s: s.console_enrolments.fail(job_id, now))
        except Exception:  # the database itself: the job will show as interrupted instead
            log.exception("pages.console.enrolment_unrecorded", extra={"job": job_id})


def _batch(job_id: str, actor: str, batch: list[str], now: datetime) -> Callable[[Services], None]:
    return lambda services: services.console_enrolments.enrol_batch(job_id, actor, batch, now)


def _unknown_job(request: Request, admin: ConsoleAdmin) -> HTMLResponse:
    """Another administrator's job, or one deleted by the retention job."""
    context = {
        "title": "console.enrolments.title",
        "problem": "console.enrolments.unknown_job",
        "back": "/console/enrolments",
    }
    return render_console(request, admin, "console/message.html", context, 404)


async def _job(request: Request, admin: ConsoleAdmin, job_id: str) -> EnrolmentJob | None:
    if not is_row_id(job_id):
        return None
    owner, now = admin.user.id, runtime_of(request).clock.now()
    return await in_unit(request, lambda s: s.console_enrolments.find(job_id, owner, now))


@router.get("/enrolments/{job_id}", response_class=HTMLResponse)
async def progress_page(request: Request, job_id: str) -> Response:
    admin = await _jdn(request)
    if isinstance(admin, Response):
        return admin
    job = await _job(request, admin, job_id)
    if job is None:
        return _unknown_job(request, admin)
    context = {"title": "console.enrolments.title", "job": job}
    return render_console(request, admin, "console/enrolment.html", context)


@router.get("/enrolments/{job_id}/progress")
async def progress(request: Request, job_id: str) -> Response:
    admin = await _jdn(request)
    if isinstance(admin, Response):
        return admin
    job = await _job(request, admin, job_id)
    if job is None:
        return JSONResponse({"found": False}, status_code=404)
    return JSONResponse(
        {
            "found": True,
            "done": job.done,
            "total": job.total,
            "status": job.status.value,
            "finished": job.finished,
            "failed": job.failed,
            "interrupted": job.interrupted,
            "counts": job.counts,
        },
        headers={"Cache-Control": "no-store"},
    )


@router.get("/enrolments/{job_id}/report.csv")
async def report(request: Request, job_id: str) -> Response:
    admin = await _jdn(request)
    if isinstance(admin, Response):
        return admin
    owner, now = admin.user.id, runtime_of(request).clock.now()
    found = None
    if is_row_id(job_id):
        found = await in_unit(
            request, lambda s: s.console_enrolments.report_csv(job_id, owner, now)
        )
    if found is None:
        return _unknown_job(request, admin)
    return Response(
        found,
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="enrolment-{job_id}.csv"',
            "Cache-Control": "no-store",
        },
    )
