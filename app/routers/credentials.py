"""A credential by its id: PIN setup, change and reset; unlock, renewal, revocation."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, status

from app.deps import ClockDep, JdnAdminDep, PeopleReaderDep
from app.errors import (
    AuthorizationFailed,
    Conflict,
    CredentialLocked,
    CredentialNotActive,
    Forbidden,
    NoEmailAddress,
    NotFound,
    RateLimited,
    ServiceUnavailable,
    TokenConsumed,
    TokenExpired,
    Unauthenticated,
)
from app.models import Credential
from app.routers.lifecycle_deps import CredentialsDep, PinsDep, PortalDep
from app.schemas.lifecycle import (
    CredentialOut,
    PinUpdate,
    RenewalRequest,
    RevocationRequest,
    TokenSentOut,
)
from app.schemas.problem import BODY_PROBLEMS, problem_responses
from app.services.lifecycle.credentials import effective_status

router = APIRouter(prefix="/v1/credentials", tags=["roaming lifecycle"])


@router.get(
    "/{credential_id}",
    response_model=CredentialOut,
    responses=problem_responses(Unauthenticated, Forbidden, NotFound),
)
def get_credential(
    credential_id: str, caller: PeopleReaderDep, credentials: CredentialsDep, clock: ClockDep
) -> CredentialOut:
    """One credential and its status as it stands now."""
    return credential_out(credentials.get_for(caller, credential_id), clock.now())


@router.put(
    "/{credential_id}/pin",
    response_model=CredentialOut,
    responses=problem_responses(
        *BODY_PROBLEMS,
        Unauthenticated,
        Forbidden,
        NotFound,
        AuthorizationFailed,
        CredentialLocked,
        CredentialNotActive,
        TokenConsumed,
        TokenExpired,
        Conflict,
    ),
)
def set_pin(
    credential_id: str, body: PinUpdate, caller: PortalDep, pins: PinsDep, clock: ClockDep
) -> CredentialOut:
    """Set the PIN: `{new_pin, token}` with the PIN-setup token (the first PIN: the credential
    becomes active) or a PIN-reset token (which also unlocks), or `{new_pin, current_pin}` to
    change it. A wrong current PIN counts towards the lock like a wrong PIN when signing:
    `authorization_failed` with `attempts_remaining`, then `credential_locked`. The new PIN is
    6 to 8 digits, not trivial, and not the current one. The person is e-mailed when the PIN
    changes."""
    now = clock.now()
    if body.token is not None:
        credential = pins.set_with_token(caller, credential_id, body.new_pin, body.token, now)
    else:
        assert body.current_pin is not None  # the schema requires one of the two
        credential = pins.change(caller, credential_id, body.current_pin, body.new_pin, now)
    return credential_out(credential, now)


@router.post(
    "/{credential_id}/pin-reset",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=TokenSentOut,
    responses=problem_responses(
        Unauthenticated,
        Forbidden,
        NotFound,
        CredentialNotActive,
        NoEmailAddress,
        Conflict,
        RateLimited,
    ),
)
def request_pin_reset(
    credential_id: str, caller: PortalDep, pins: PinsDep, clock: ClockDep
) -> TokenSentOut:
    """E-mail a PIN-reset token to the registered address (for a credential still waiting
    for its first PIN: a new PIN-setup token). Refused (`conflict`) while the address is
    less than 24 hours old; at most 5 a day (`rate_limited`)."""
    sent = pins.request_reset(caller, credential_id, clock.now())
    return TokenSentOut(
        purpose=sent.purpose.value,
        destination=sent.destination,
        expires_at=sent.expires_at,
    )


@router.post(
    "/{credential_id}/unlock",
    response_model=CredentialOut,
    responses=problem_responses(Unauthenticated, Forbidden, NotFound, Conflict),
)
def unlock(
    credential_id: str, caller: JdnAdminDep, credentials: CredentialsDep, clock: ClockDep
) -> CredentialOut:
    """Unlock a credential locked by wrong PINs (JDN); the PIN stays as it was."""
    now = clock.now()
    return credential_out(credentials.unlock(caller, credential_id, now), now)


@router.post(
    "/{credential_id}/renewal",
    status_code=status.HTTP_201_CREATED,
    response_model=CredentialOut,
    responses=problem_responses(
        *BODY_PROBLEMS,
        Unauthenticated,
        Forbidden,
        NotFound,
        Conflict,
        NoEmailAddress,
        ServiceUnavailable,
    ),
)
def renew(
    credential_id: str,
    caller: JdnAdminDep,
    credentials: CredentialsDep,
    clock: ClockDep,
    body: RenewalRequest | None = None,
) -> CredentialOut:
    """Renew (JDN): a new key and certificate for the same person, answered as the new
    credential, `pending_pin`. The person sets its PIN with the token e-mailed to them; until
    then the current credential keeps signing, and from then on it is `superseded`."""
    now = clock.now()
    key_algorithm = body.key_algorithm if body else None
    return credential_out(credentials.renew(caller, credential_id, key_algorithm, now), now)


@router.post(
    "/{credential_id}/revocation",
    response_model=CredentialOut,
    responses=problem_responses(*BODY_PROBLEMS, Unauthenticated, Forbidden, NotFound, Conflict),
)
def revoke(
    credential_id: str,
    body: RevocationRequest,
    caller: JdnAdminDep,
    credentials: CredentialsDep,
    clock: ClockDep,
) -> CredentialOut:
    """Revoke the certificate (JDN), with an RFC 5280 reason: signing is refused at once,
    pending signing requests are cancelled, and `GET /v1/ca/crl` lists it."""
    now = clock.now()
    return credential_out(credentials.revoke(caller, credential_id, body.reason, now), now)


def credential_out(credential: Credential, now: datetime) -> CredentialOut:
    return CredentialOut(
        id=credential.id,
        medium=credential.medium,
        status=effective_status(credential, now),
        serial=credential.certificate_serial or credential.token_serial,
        key_algorithm=credential.key_algorithm,
        not_before=credential.not_before,
        not_after=credential.not_after,
        certificate=credential.certificate_pem,
        locked_at=credential.locked_at,
        revoked_at=credential.revoked_at,
        revocation_reason=credential.revocation_reason,
        replaces_credential_id=credential.replaces_credential_id,
        created_at=credential.created_at,
    )
