"""Typed dependencies: the runtime, the request's session (its one commit point), the caller."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Depends, Request, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ValidationError
from sqlalchemy.orm import Session
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.clock import Clock
from app.db import unit_of_work
from app.errors import Forbidden, Unauthenticated
from app.models import Role
from app.runtime import Runtime
from app.services.audit.log import AuditLog
from app.services.ca import CertificateAuthorityService
from app.services.clients import Caller, ClientService
from app.services.lifecycle.people import PeopleService
from app.services.signing.service import SigningService
from app.services.signing.verification import VerificationService
from app.settings import Settings
from app.units import Services


# Dependencies that only build objects are `async def`: FastAPI runs a plain `def` dependency
# in the thread pool, and each such hop costs more than the work itself. Only those that touch
# the database (authenticate, the endpoints) take a thread.
async def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def get_session(runtime: RuntimeDep) -> AsyncIterator[Session]:
    """One session per request, committed before the response is sent (see db.transaction).

    Requests wait for a database slot here, on the event loop, before any of their work takes
    a worker thread: a request holding a connection must never wait for a thread that another
    request, itself waiting for a connection, occupies.
    """
    async with runtime.database_slots():
        unit = unit_of_work(runtime.sessions)
        session = unit.__enter__()
        try:
            yield session
        except BaseException as error:
            await run_in_threadpool(unit.__exit__, type(error), error, error.__traceback__)
            raise
        await run_in_threadpool(unit.__exit__, None, None, None)


SessionDep = Annotated[Session, Depends(get_session, scope="function")]


async def get_settings_dep(runtime: RuntimeDep) -> Settings:
    return runtime.settings


async def get_clock(runtime: RuntimeDep) -> Clock:
    return runtime.clock


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
ClockDep = Annotated[Clock, Depends(get_clock)]


async def get_services(session: SessionDep, runtime: RuntimeDep) -> Services:
    return Services(runtime, session)


ServicesDep = Annotated[Services, Depends(get_services)]


async def get_audit(services: ServicesDep) -> AuditLog:
    return services.audit


AuditDep = Annotated[AuditLog, Depends(get_audit)]


# Documents the API key in openapi.yaml (components.securitySchemes.apiKey); the scopes of each
# operation's requirement name the roles it admits (OpenAPI 3.1 allows role names there).
# authenticate() reads the header itself, so that every refusal is our own 401 problem.
api_key_scheme = HTTPBearer(
    scheme_name="apiKey",
    description="The caller's API key (`python -m app clients create NAME --role ROLE`), as "
    "`Authorization: Bearer <key>`. An operation's scopes are the roles it admits.",
    auto_error=False,
)


def authenticate(
    request: Request,
    session: SessionDep,
    audit: AuditDep,
    _documented: Annotated[HTTPAuthorizationCredentials | None, Depends(api_key_scheme)],
) -> Caller:
    return _caller(request, session, audit)


def _caller(request: Request, session: Session, audit: AuditLog) -> Caller:
    scheme, _, api_key = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not api_key.strip():
        raise Unauthenticated("send Authorization: Bearer <api key>")
    runtime: Runtime = request.app.state.runtime
    caller = ClientService(session, audit, runtime.api_key_cache()).authenticate(api_key.strip())
    request.scope.setdefault("state", {})["caller_name"] = caller.name
    return caller


CallerDep = Annotated[Caller, Depends(authenticate)]


def _check_role(caller: Caller, allowed: frozenset[Role]) -> Caller:
    if caller.role not in allowed:
        raise Forbidden(f"this operation needs the role {' or '.join(sorted(allowed))}")
    return caller


def require_role(*roles: Role) -> Callable[[Caller], Awaitable[Caller]]:
    allowed = frozenset(roles)

    # A default rather than Annotated: annotations are strings here and cannot see `allowed`.
    with_role = Security(authenticate, scopes=sorted(allowed))

    async def check(caller: Caller = with_role) -> Caller:
        return _check_role(caller, allowed)

    return check


SignerDep = Annotated[Caller, Depends(require_role(Role.SIGNER))]
JdnAdminDep = Annotated[Caller, Depends(require_role(Role.JDN_ADMIN))]
PeopleReaderDep = Annotated[
    Caller, Depends(require_role(Role.PORTAL, Role.JDN_ADMIN, Role.AGENCY_ADMIN))
]


# Each service a route needs, from the unit of work's `Services` (app.units builds them all).


async def get_ca_service(services: ServicesDep) -> CertificateAuthorityService:
    return services.ca


async def get_signing_service(services: ServicesDep) -> SigningService:
    return services.signing


async def get_people_service(services: ServicesDep) -> PeopleService:
    return services.people


async def get_verification_service(services: ServicesDep) -> VerificationService:
    return services.verification


CaServiceDep = Annotated[CertificateAuthorityService, Depends(get_ca_service)]
SigningServiceDep = Annotated[SigningService, Depends(get_signing_service)]
PeopleServiceDep = Annotated[PeopleService, Depends(get_people_service)]
VerificationServiceDep = Annotated[VerificationService, Depends(get_verification_service)]


# Request bodies read as dependencies, in their place among an endpoint's dependencies (the
# one-unit routes of app.routing take their body this way).


M = TypeVar("M", bound=BaseModel)


class JsonBody(Generic[M]):
    """A dependency: the request's JSON body as `model` (`Annotated[Model, Depends(JsonBody(
    Model))]`), refused as FastAPI refuses a body parameter (`json_body`). Unlike a body
    parameter it is read in its place among the endpoint's dependencies: after the caller and
    the caller's own resource (401, 403, 404 before 422)."""

    def __init__(self, model: type[M]) -> None:
        self.model = model

    async def __call__(self, request: Request) -> M:
        return json_body(self.model, await request.body())


def json_body(model: type[M], raw: bytes) -> M:
    """The body as `model`, refused as FastAPI refuses a body parameter (tests/unit/
    test_json_body.py): none is `missing`, bad JSON `json_invalid` (400), the rest a 422 with
    its errors located under `body`."""
    if not raw:
        raise RequestValidationError([_missing_body()])
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, RecursionError) as error:
        # RecursionError: nested too deep for the parser (JsonBodyMiddleware refuses such a
        # body first; this keeps the answer FastAPI gives where it does not run).
        raise StarletteHTTPException(400, "There was an error parsing the body") from error
    except json.JSONDecodeError as error:
        raise RequestValidationError(
            [
                {
                    "type": "json_invalid",
                    "loc": ("body", error.pos),
                    "msg": "JSON decode error",
                    "input": {},
                    "ctx": {"error": error.msg},
                }
            ]
        ) from error
    try:
        # As FastAPI validates a body parameter (its messages included).
        return model.model_validate(data, from_attributes=True)
    except ValidationError as error:
        raise RequestValidationError(
            [
                {**problem, "loc": ("body", *problem["loc"])}
                for problem in error.errors(include_url=False)
            ]
        ) from None


def _missing_body() -> dict[str, Any]:
    return {"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}
