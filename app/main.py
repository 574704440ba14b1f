"""create_app(): the FastAPI application, its error mapping, middleware and background work."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from app.clock import Clock
from app.errors import PROBLEM_JSON, ConfigurationError, DomainError, ErrorAnswer, problem_body
from app.logs import configure_logging
from app.metrics import FAILURES
from app.middleware import (
    JsonBodyMiddleware,
    RequestContextMiddleware,
    SecurityHeadersMiddleware,
    UnexpectedErrorMiddleware,
)
from app.routers import (
    applications,
    audit_events,
    ca,
    credentials,
    csc,
    devices,
    enrolments,
    evidence,
    health,
    signatures,
    signing_requests,
    users,
)
from app.routers.pages import console, docs, language, me, me_account, tokens
from app.routers.pages.templating import STATIC_DIR
from app.routing import CscRoute, OneUnitDispatch, error_format, error_format_for_path
from app.runtime import Runtime
from app.schemas.problem import body_schemas
from app.services.lifecycle.jobs import job_runner, run_jobs_loop
from app.services.mail.loop import run_delivery_loop
from app.settings import Settings, get_settings

log = logging.getLogger("roamsign.app")

API_DESCRIPTION = """\
roamsign signs documents with a person's roaming certificate, one signature per one-time
password. A signing system asks for an OTP bound to one document hash, the person receives it
by e-mail (or on their MyGPKI Mobile device), and the system submits the OTP and the PIN within
the validity window to receive the signature. Errors are RFC 9457 `application/problem+json`
with a stable `code`.
"""


def create_app(
    settings: Settings | None = None,
    *,
    runtime: Runtime | None = None,
    clock: Clock | None = None,
    background_workers: bool | None = None,
) -> FastAPI:
    settings = settings or (runtime.settings if runtime else get_settings())
    runtime = runtime or Runtime.build(settings, clock)
    run_workers = settings.delivery_worker if background_workers is None else background_workers

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # What exists now (modules, routes, schemas: ~180,000 objects) lives as long as the
        # process: out of the collector's reach, a full collection no longer walks it all
        # (~0.1 s each, a pause of every request in flight, several a minute under load).
        gc.collect()
        gc.freeze()
        stop = asyncio.Event()
        tasks = (
            [asyncio.create_task(work) for work in background_work(runtime, stop)]
            if run_workers
            else []
        )
        try:
            yield
        finally:
            stop.set()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait_for(task, timeout=10)
            runtime.close()

    app = FastAPI(
        title="roamsign",
        version="1.0.0",
        description=API_DESCRIPTION,
        lifespan=lifespan,
        openapi_url="/openapi.json",
        # FastAPI's own pages load their scripts from a CDN: ours are served from /static.
        docs_url=None,
        redoc_url=None,
        # No OpenTelemetry here (metrics: /metrics, app.metrics): FastAPI's would ask for its
        # providers on every request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.runtime = runtime
    # What a request no route answers speaks (an unknown path, a body refused before routing):
    # the format of the routes mounted over its path (app.routing.error_format).
    app.state.error_formats = ((csc.PATH_PREFIX, CscRoute.error_format),)
    for router in (
        health.router,
        ca.router,
        evidence.router,
        users.router,
        applications.router,
        enrolments.router,
        credentials.router,
        signing_requests.router,
        signatures.router,
        audit_events.router,
        csc.router,
        devices.router,
        docs.router,
        language.router,
        me.router,  # before tokens.router: /me/sign-in/code is not a token page
        me_account.router,
        tokens.router,
        console.router,
    ):
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR, check_dir=False), name="static")
    install_error_handlers(app)
    app.openapi = lambda: problem_openapi(app)  # type: ignore[method-assign]
    # Innermost first: the request context wraps everything, the last-resort 500 included.
    app.add_middleware(OneUnitDispatch)
    app.add_middleware(JsonBodyMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(UnexpectedErrorMiddleware, handler=on_unexpected)
    app.add_middleware(SecurityHeadersMiddleware)
    app.add_middleware(RequestContextMiddleware)
    return app


def background_work(runtime: Runtime, stop: asyncio.Event) -> list[Any]:
    runtime.courier.bind(asyncio.get_running_loop())
    poll = runtime.settings.delivery_poll_seconds
    delivery = [
        run_delivery_loop(runtime.delivery_worker(), poll, runtime.courier, stop)
        for _ in range(runtime.settings.delivery_concurrency)
    ]
    return [
        *delivery,
        # Every process polls; the job_runs lease lets one of them run each due job.
        run_jobs_loop(job_runner(runtime), runtime.settings.jobs_poll_seconds, stop),
    ]


def problem_openapi(app: FastAPI) -> dict[str, Any]:
    """The generated document, with every error answer described as what it is: a problem."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    spec = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    for path, operations in spec.get("paths", {}).items():
        errors = error_format_for_path(app, path)
        for operation in operations.values():
            errors.document(operation)
    components = spec.setdefault("components", {})
    schemas = {**body_schemas(), **components.get("schemas", {})}
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    components["schemas"] = dict(sorted(schemas.items()))
    app.openapi_schema = spec
    return spec


def error_response(answer: ErrorAnswer) -> JSONResponse:
    return JSONResponse(
        answer.content,
        status_code=answer.status,
        media_type=answer.media_type,
        headers=answer.headers or None,
    )


def install_error_handlers(app: FastAPI) -> None:
    """Each failure is written by the wire format of the route it happened on."""

    @app.exception_handler(DomainError)
    async def on_domain_error(request: Request, error: DomainError) -> JSONResponse:
        FAILURES.labels(error.code).inc()
        return error_response(error_format(request.scope).domain(error))

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        return error_response(error_format(request.scope).invalid_request(error.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        answer = error_format(request.scope).http_error(
            error.status_code,
            str(error.detail),
            dict(error.headers or {}),
            lambda: allowed_methods(request),
        )
        return error_response(answer)

    app.add_exception_handler(OperationalError, on_database_down)
    app.add_exception_handler(PoolTimeout, on_database_down)
    # Normally UnexpectedErrorMiddleware answers first; this covers failures outside it.
    app.add_exception_handler(Exception, on_unexpected)


_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def allowed_methods(request: Request) -> list[str]:
    """Every method of the requested resource (RFC 9110 s.15.5.6): Starlette's 405 names only
    the methods of the first route whose path matched, one of the resource's routes."""
    routes = request.app.router.routes
    return [
        method
        for method in _METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] == Match.FULL for route in routes
        )
    ]


async def on_database_down(_request: Request, error: Exception) -> Response:
    log.error("database.unavailable", extra={"error": type(error).__name__})
    body = problem_body(
        status=503,
        code="service_unavailable",
        title="Service temporarily unavailable",
        detail="the database is not reachable; retry shortly",
    )
    return error_response(ErrorAnswer(503, body, PROBLEM_JSON, {"Retry-After": "5"}))


async def on_unexpected(request: Request, error: Exception) -> Response:
    if isinstance(error, DBAPIError) and error.connection_invalidated:
        return await on_database_down(request, error)
    log.exception("request.failed", extra={"error": type(error).__name__}, exc_info=error)
    body = problem_body(
        status=500,
        code="internal_error",
        title="Internal error",
        detail="an unexpected error occurred; it has been logged with the request id",
    )
    return error_response(ErrorAnswer(500, body, PROBLEM_JSON))


def build_app_from_environment() -> FastAPI:
    """The uvicorn factory: settings from the environment, logs configured."""
    settings = get_settings()
    configure_logging(settings.log_level, as_json=settings.log_json)
    try:
        return create_app(settings)
    except ConfigurationError as error:
        # One line naming the setting, not a traceback, from each worker that cannot start.
        raise SystemExit(f"error: {error}") from None
