"""Dependencies of the lifecycle routes: the callers they admit and the services they call."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from app.deps import ServicesDep, require_role
from app.errors import NotFound
from app.models import Role
from app.services.audit.trail import AuditTrailService
from app.services.clients import Caller
from app.services.lifecycle.applications import ApplicationService
from app.services.lifecycle.contacts import ContactService
from app.services.lifecycle.credential_lifecycle import CredentialLifecycle
from app.services.lifecycle.pins import PinService
from app.validation import normalise_mykad

PortalDep = Annotated[Caller, Depends(require_role(Role.PORTAL))]
PortalOrJdnDep = Annotated[Caller, Depends(require_role(Role.PORTAL, Role.JDN_ADMIN))]
AdministratorDep = Annotated[Caller, Depends(require_role(Role.AGENCY_ADMIN, Role.JDN_ADMIN))]


async def get_applications(services: ServicesDep) -> ApplicationService:
    return services.applications


async def get_credentials(services: ServicesDep) -> CredentialLifecycle:
    return services.credential_lifecycle


async def get_pins(services: ServicesDep) -> PinService:
    return services.pins


async def get_contacts(services: ServicesDep) -> ContactService:
    return services.contacts


async def get_audit_trail(services: ServicesDep) -> AuditTrailService:
    return services.audit_trail


ApplicationsDep = Annotated[ApplicationService, Depends(get_applications)]
CredentialsDep = Annotated[CredentialLifecycle, Depends(get_credentials)]
PinsDep = Annotated[PinService, Depends(get_pins)]
ContactsDep = Annotated[ContactService, Depends(get_contacts)]
AuditTrailDep = Annotated[AuditTrailService, Depends(get_audit_trail)]


async def path_mykad(mykad: str) -> str:
    """The MyKad of the path, normalised; one that cannot exist is simply not found."""
    try:
        return normalise_mykad(mykad)
    except ValueError:
        raise NotFound("no such person") from None


MyKadPath = Annotated[str, Depends(path_mykad)]
