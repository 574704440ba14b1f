"""Liveness, readiness and metrics: no key needed."""

from __future__ import annotations

from fastapi import APIRouter, Response
from pydantic import BaseModel
from sqlalchemy import text

from app.deps import RuntimeDep
from app.errors import ServiceUnavailable
from app.metrics import render_metrics
from app.schemas.problem import problem_responses

router = APIRouter(tags=["operations"])


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str
    database: str
    key_store: str


@router.get("/healthz", response_model=Health)
def healthz() -> Health:
    """The process is up. Says nothing about its dependencies (see /readyz)."""
    return Health(status="ok")


@router.get("/readyz", response_model=Readiness, responses=problem_responses(ServiceUnavailable))
def readyz(runtime: RuntimeDep) -> Readiness:
    """Ready to serve: the database answers and the key store can seal and open keys."""
    try:
        with runtime.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:
        raise ServiceUnavailable("the database is not reachable") from exc
    try:
        runtime.key_store.self_test()
    except Exception as exc:
        raise ServiceUnavailable("the key store is not usable") from exc
    return Readiness(status="ready", database="ok", key_store="ok")


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}},
)
def metrics(runtime: RuntimeDep) -> Response:
    """Prometheus metrics, summed over every worker process."""
    body, content_type = render_metrics(runtime)
    return Response(body, media_type=content_type)
