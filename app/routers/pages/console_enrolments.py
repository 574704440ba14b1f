"""The console's bulk move of token users (JDN, as `POST /v1/roaming-enrolments`): upload the
CSV, watch the progress bar (static/console/progress.js polls the JSON progress; without
scripts the page refreshes itself), download the per-row report as CSV."""

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
    not_found,
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
    runtime_of,
)
from app.runtime import Runtime
from app.services.lifecycle.bulk_enrolment import EnrolmentResult
from app.services.web.console import ConsoleAdmin
from app.services.web.console_enrolments import (
    EnrolmentJob,
    EnrolmentJobs,
    read_upload,
    record_upload,
)
from app.units import Services

router = APIRouter()
log = logging.getLogger("roamsign.console")


def _jobs(request: Request) -> EnrolmentJobs:
    state = request.app.state
    if not hasattr(state, "console_enrolment_jobs"):
        state.console_enrolment_jobs = EnrolmentJobs()
        state.console_enrolment_tasks = set()
    jobs: EnrolmentJobs = state.console_enrolment_jobs
    return jobs


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
    job = _jobs(request).start(admin.user.id, len(mykads), now)
    actor = admin.caller.name
    await in_unit(request, lambda s: record_upload(s.audit, actor, job.id, len(mykads), now))
    task = asyncio.create_task(_enrol(runtime, job, mykads, actor))
    tasks: set[asyncio.Task[None]] = request.app.state.console_enrolment_tasks
    tasks.add(task)
    task.add_done_callback(tasks.discard)
    return redirect(f"/console/enrolments/{job.id}")


async def _enrol(runtime: Runtime, job: EnrolmentJob, mykads: list[str], actor: str) -> None:
    """Enrol the upload a batch (one transaction) at a time; the job shows how far it got."""
    try:
        for batch in job.batches(mykads):
            now = runtime.clock.now()
            job.results += await in_runtime_unit(runtime, _batch(actor, batch, now))
    except Exception:
        job.failed = True
        log.exception("console.enrolment.failed", extra={"job": job.id, "done": job.done})
    finally:
        job.finished_at = runtime.clock.now()


def _batch(
    actor: str, batch: list[str], now: datetime
) -> Callable[[Services], list[EnrolmentResult]]:
    return lambda services: services.applications.enrol(actor, batch, now)


@router.get("/enrolments/{job_id}", response_class=HTMLResponse)
async def progress_page(request: Request, job_id: str) -> Response:
    admin = await _jdn(request)
    if isinstance(admin, Response):
        return admin
    job = _jobs(request).get(job_id, admin.user.id)
    if job is None:
        return not_found(request, admin)
    context = {"title": "console.enrolments.title", "job": job}
    return render_console(request, admin, "console/enrolment.html", context)


@router.get("/enrolments/{job_id}/progress")
async def progress(request: Request, job_id: str) -> Response:
    admin = await _jdn(request)
    if isinstance(admin, Response):
        return admin
    job = _jobs(request).get(job_id, admin.user.id)
    if job is None:
        return JSONResponse({"found": False}, status_code=404)
    return JSONResponse(
        {
            "found": True,
            "done": job.done,
            "total": job.total,
            "finished": job.finished_at is not None,
            "failed": job.failed,
            "counts": job.counts,
        },
        headers={"Cache-Control": "no-store"},
    )


@router.get("/enrolments/{job_id}/report.csv")
async def report(request: Request, job_id: str) -> Response:
    admin = await _jdn(request)
    if isinstance(admin, Response):
        return admin
    job = _jobs(request).get(job_id, admin.user.id)
    if job is None:
        return not_found(request, admin)
    return Response(
        job.report_csv(),
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="enrolment-{job.id}.csv"',
            "Cache-Control": "no-store",
        },
    )
