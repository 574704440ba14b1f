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
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from app.clock import Clock
from app.errors import PROBLEM_JSON, DomainError, domain_problem, problem_body
from app.logs import configure_logging
from app.metrics import FAILURES
from app.middleware import (
    JsonBodyMiddleware,
    RequestContextMiddleware,
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
    health,
    signatures,
    signing_requests,
    users,
)
from app.runtime import Runtime
from app.schemas.csc import CscError, csc_error, csc_invalid_request, is_csc_path
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
    )
    app.state.runtime = runtime
    for router in (
        health.router,
        ca.router,
        users.router,
        applications.router,
        enrolments.router,
        credentials.router,
        signing_requests.router,
        signatures.router,
        audit_events.router,
        csc.router,
        devices.router,
    ):
        app.include_router(router)
    install_error_handlers(app)
    app.openapi = lambda: problem_openapi(app)  # type: ignore[method-assign]
    # Innermost first: the request context wraps everything, the last-resort 500 included.
    app.add_middleware(JsonBodyMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(UnexpectedErrorMiddleware, handler=on_unexpected)
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
        for operation in operations.values():
            if is_csc_path(path):
                # CSC routes declare their own error shape, and validation is invalid_request.
                operation.get("responses", {}).pop("422", None)
                continue
            for status, response in operation.get("responses", {}).items():
                if status.isdigit() and int(status) >= 400:
                    response["content"] = {
                        PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}
                    }
                    if status == "422" and response.get("description") == "Validation Error":
                        response["description"] = "Invalid request (`validation_error`)"
    components = spec.setdefault("components", {})
    schemas = {**body_schemas(), **components.get("schemas", {})}
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    components["schemas"] = dict(sorted(schemas.items()))
    app.openapi_schema = spec
    return spec


def problem_response(
    status: int, body: dict[str, Any], headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def csc_response(
    status: int, body: CscError, headers: dict[str, str] | None = None
) -> JSONResponse:
    """The CSC API's error shape, for paths under /csc/ (the native API keeps problem+json)."""
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(DomainError)
    async def on_domain_error(request: Request, error: DomainError) -> JSONResponse:
        FAILURES.labels(error.code).inc()
        if is_csc_path(request.url.path):
            return csc_response(*csc_error(error), error.headers)
        return problem_response(error.status, domain_problem(error), error.headers)

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        problems = error.errors()
        if is_csc_path(request.url.path):
            return csc_response(*csc_invalid_request(_csc_description(problems)))
        if any(problem.get("type") == "json_invalid" for problem in problems):
            body = problem_body(
                status=400,
                code="bad_request",
                title="Bad request",
                detail="the request body is not valid JSON",
            )
            return problem_response(400, body)
        errors = [
            {"pointer": _pointer(problem.get("loc", ())), "detail": _message(problem)}
            for problem in problems
        ]
        body = problem_body(
            status=422,
            code="validation_error",
            title="Invalid request",
            detail="; ".join(f"{e['pointer'] or '/'}: {e['detail']}" for e in errors),
            errors=errors,
        )
        return problem_response(422, body)

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        if is_csc_path(request.url.path):
            _status, csc_body = csc_invalid_request(str(error.detail))
            return csc_response(error.status_code, csc_body, dict(error.headers or {}))
        code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "bad_request")
        title = {404: "Not found", 405: "Method not allowed"}.get(error.status_code, "Bad request")
        body = problem_body(
            status=error.status_code, code=code, title=title, detail=str(error.detail)
        )
        headers = dict(error.headers or {})
        if error.status_code == 405:
            headers["Allow"] = ", ".join(allowed_methods(request))
        return problem_response(error.status_code, body, headers)

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
    return problem_response(503, body, {"Retry-After": "5"})


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
    return problem_response(500, body)


def _pointer(loc: Any) -> str:
    parts = [str(part) for part in loc]
    if parts and parts[0] == "body":
        parts = parts[1:]
    return (
        "/" + "/".join(part.replace("~", "~0").replace("/", "~1") for part in parts)
        if parts
        else ""
    )


def _csc_description(problems: Any) -> str:
    if any(problem.get("type") == "json_invalid" for problem in problems):
        return "the request body is not valid JSON"
    if any(
        problem.get("loc") == ("body",) and problem.get("type") == "missing" for problem in problems
    ):
        return "a JSON object body is required"
    return "; ".join(
        ": ".join(part for part in (_pointer(problem.get("loc", ())), _message(problem)) if part)
        for problem in problems
    )


def _message(problem: dict[str, Any]) -> str:
    message = str(problem.get("msg", "invalid"))
    return message.removeprefix("Value error, ")


def build_app_from_environment() -> FastAPI:
    """The uvicorn factory: settings from the environment, logs configured."""
    settings = get_settings()
    configure_logging(settings.log_level, as_json=settings.log_json)
    return create_app(settings)
