"""Typed dependencies: the runtime, the request's session (its one commit point), the caller."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from app.clock import Clock
from app.db import unit_of_work
from app.errors import Forbidden, Unauthenticated
from app.models import Role
from app.runtime import Runtime
from app.services.audit import AuditLog
from app.services.ca import CertificateAuthorityService
from app.services.clients import Caller, ClientService
from app.services.people import PeopleService
from app.services.signing import SigningService
from app.services.verification import VerificationService
from app.settings import Settings


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


async def get_audit(session: SessionDep, runtime: RuntimeDep) -> AuditLog:
    return runtime.audit_log(session)


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
    scheme, _, api_key = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not api_key.strip():
        raise Unauthenticated("send Authorization: Bearer <api key>")
    caller = ClientService(session, audit).authenticate(api_key.strip())
    request.scope.setdefault("state", {})["caller_name"] = caller.name
    return caller


CallerDep = Annotated[Caller, Depends(authenticate)]


def require_role(*roles: Role) -> Callable[[Caller], Awaitable[Caller]]:
    allowed = frozenset(roles)

    # A default rather than Annotated: annotations are strings here and cannot see `allowed`.
    with_role = Security(authenticate, scopes=sorted(allowed))

    async def check(caller: Caller = with_role) -> Caller:
        if caller.role not in allowed:
            raise Forbidden(f"this operation needs the role {' or '.join(sorted(allowed))}")
        return caller

    return check


SignerDep = Annotated[Caller, Depends(require_role(Role.SIGNER))]
JdnAdminDep = Annotated[Caller, Depends(require_role(Role.JDN_ADMIN))]
PeopleReaderDep = Annotated[
    Caller, Depends(require_role(Role.PORTAL, Role.JDN_ADMIN, Role.AGENCY_ADMIN))
]


def ca_service(session: Session, runtime: Runtime) -> CertificateAuthorityService:
    return CertificateAuthorityService(
        session, runtime.key_store, runtime.ca_cache, runtime.settings.ca_name
    )


def signing_service(session: Session, runtime: Runtime, audit: AuditLog) -> SigningService:
    return SigningService(
        session,
        settings=runtime.settings,
        keys=runtime.keys,
        key_store=runtime.key_store,
        ca=ca_service(session, runtime),
        audit=audit,
        on_outbox=runtime.delivery_wakeup.set,
    )


async def get_signing_service(
    session: SessionDep, runtime: RuntimeDep, audit: AuditDep
) -> SigningService:
    return signing_service(session, runtime, audit)


async def get_people_service(session: SessionDep, audit: AuditDep) -> PeopleService:
    return PeopleService(session, audit)


async def get_verification_service(session: SessionDep, runtime: RuntimeDep) -> VerificationService:
    return VerificationService(session, ca_service(session, runtime))


SigningServiceDep = Annotated[SigningService, Depends(get_signing_service)]
PeopleServiceDep = Annotated[PeopleService, Depends(get_people_service)]
VerificationServiceDep = Annotated[VerificationService, Depends(get_verification_service)]
