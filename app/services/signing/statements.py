"""The signing flow's hot statements, built once.

Building a statement and its cache key costs more than running it; Core on the table, so no
ORM synchronisation either.
"""

from __future__ import annotations

import functools

from sqlalchemy import Table, and_, bindparam, insert, or_, select, update
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.sql.expression import Executable

from app.db import status_constant
from app.models import Credential, RequestStatus, Signature, SigningRequest, User
from app.models.device import Device, DeviceStatus
from app.services.credential_rules import SIGNING_CREDENTIAL
from app.services.rate_limits import lock_columns

REQUESTS: Table = SigningRequest.__table__  # type: ignore[assignment]
SIGNATURES: Table = Signature.__table__  # type: ignore[assignment]

# Counts one check before anything is compared, atomically: parallel guesses cannot exceed
# the limit, and the row lock it takes is held until the transaction ends.
COUNT_ATTEMPT = (
    update(REQUESTS)
    .where(
        REQUESTS.c.id == bindparam("request_id"),
        REQUESTS.c.status == RequestStatus.PENDING,
        REQUESTS.c.authorized_at.is_(None),
        REQUESTS.c.attempts < bindparam("max_attempts"),
        REQUESTS.c.expires_at > bindparam("now"),
    )
    .values(attempts=REQUESTS.c.attempts + 1)
    .returning(REQUESTS.c.attempts)
)
# Frees the document hash of the person with this MyKad from pending requests whose window
# is over (written with the read of the person: app.db.select_after_writes).
EXPIRE_STALE_OF_MYKAD = (
    update(REQUESTS)
    .where(
        REQUESTS.c.user_id.in_(select(User.id).where(User.mykad == bindparam("mykad"))),
        REQUESTS.c.document_hash == bindparam("hash"),
        REQUESTS.c.status == status_constant(RequestStatus.PENDING),
        REQUESTS.c.expires_at <= bindparam("now"),
        or_(REQUESTS.c.sad_expires_at.is_(None), REQUESTS.c.sad_expires_at <= bindparam("now")),
    )
    .values(status=RequestStatus.EXPIRED, finished_at=bindparam("now"))
)
# Spends a pending OTP once. No values clause: the SET columns are the parameters the caller
# passes besides `request_id` (signed, or a SAD), each set of them compiled once.
SPEND_OTP = (
    update(REQUESTS)
    .where(
        REQUESTS.c.id == bindparam("request_id"),
        REQUESTS.c.status == RequestStatus.PENDING,
        REQUESTS.c.authorized_at.is_(None),
    )
    .returning(REQUESTS.c.id)
)
# The person, their roaming credential and their active device (partial unique indexes: at
# most one of each).
PERSON_WITH_SIGNER = (
    select(User, Credential, Device)
    .outerjoin(Credential, and_(Credential.user_id == User.id, SIGNING_CREDENTIAL))
    .outerjoin(Device, and_(Device.user_id == User.id, Device.status == DeviceStatus.ACTIVE))
    .where(User.mykad == bindparam("mykad"))
)


@functools.cache
def person_with_signer(locks: int) -> Executable:
    """`PERSON_WITH_SIGNER`, taking `locks` advisory locks (app.services.rate_limits.
    lock_columns) for the person's row, in the same statement."""
    return PERSON_WITH_SIGNER.add_columns(*lock_columns(locks)) if locks else PERSON_WITH_SIGNER


# A new request and a signature are not changed again in the unit of work that writes them:
# Core inserts skip the ORM's unit of work (its flush of one new object cost more than the
# INSERT itself).
INSERT_REQUEST = insert(REQUESTS)
REQUEST_COLUMNS = tuple(column.key for column in REQUESTS.columns)
INSERT_SIGNATURE = insert(SIGNATURES)
REQUEST_WITH_SIGNER = (
    select(SigningRequest, Credential, User)
    .join(Credential, Credential.id == SigningRequest.credential_id)
    .join(User, User.id == SigningRequest.user_id)
    .where(SigningRequest.id == bindparam("request_id"))
)
# The same, its credential and person locked for the check that follows (app.services.signing.
# check): the checks of one credential take turns, so its lock and the person's hold are exact.
# FOR NO KEY UPDATE: a new request's foreign keys (FOR KEY SHARE) never wait for it.
REQUEST_WITH_LOCKED_SIGNER = REQUEST_WITH_SIGNER.with_for_update(
    of=[Credential, User], key_share=True
)
# Set on `Session.info`: the id of the request whose credential and person the session holds
# locked (loaded by REQUEST_WITH_LOCKED_SIGNER).
SIGNER_LOCKED = "roamsign.signing.signer_locked"


def loaded_as(request: SigningRequest, **values: object) -> None:
    """Show in the loaded object what a conditional UPDATE just stored, as if read from the
    row: cheaper than the ORM's own synchronisation, and it marks nothing for a second write."""
    for name, value in values.items():
        set_committed_value(request, name, value)
