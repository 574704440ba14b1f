"""Liveness, readiness and metrics: no key needed."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel
from sqlalchemy import text

from app.deps import RuntimeDep
from app.errors import ServiceUnavailable
from app.metrics import render_metrics
from app.runtime import Runtime
from app.schemas.problem import problem_responses
from app.services.mail.claims import outbox_stats

log = logging.getLogger("roamsign.health")
router = APIRouter(tags=["operations"])


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str
    database: str
    key_store: str


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """The process is up. Says nothing about its dependencies (see /readyz)."""
    # Answered on the event loop: a plain `def` would wait for a worker thread, so a pool
    # busy with slow database calls would make a live process look dead.
    return Health(status="ok")


@router.get("/readyz", response_model=Readiness, responses=problem_responses(ServiceUnavailable))
async def readyz(runtime: RuntimeDep) -> Readiness:
    """Ready to serve: the database answers and the key store signs and verifies a test
    digest (with `pkcs11`, inside the token: a token that went away fails this)."""
    try:
        async with runtime.database_slots():
            await run_in_threadpool(_ping_database, runtime)
    except Exception as exc:
        raise ServiceUnavailable("the database is not reachable") from exc
    try:
        # On a worker thread: a token call may wait for a free session.
        await run_in_threadpool(runtime.key_store.self_test)
    except Exception as exc:
        log.warning("readiness.key_store_failed", extra={"error": str(exc)})
        raise ServiceUnavailable("the key store is not usable") from exc
    return Readiness(status="ready", database="ok", key_store="ok")


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}},
)
async def metrics(runtime: RuntimeDep) -> Response:
    """Prometheus metrics, summed over every worker process."""
    async with runtime.database_slots():  # the outbox gauges read the database
        body, content_type = await run_in_threadpool(render_metrics, lambda: _outbox(runtime))
    return Response(body, media_type=content_type)


def _ping_database(runtime: Runtime) -> None:
    with runtime.engine.connect() as connection:
        connection.execute(text("SELECT 1"))


def _outbox(runtime: Runtime) -> tuple[int, float]:
    with runtime.sessions() as session:
        return outbox_stats(session, runtime.clock.now())
