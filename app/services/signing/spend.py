"""Spending a checked OTP once (on a signature, or on a CSC SAD) and a SAD once (on its
signature): conditional updates that settle concurrent submissions."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import update
from sqlalchemy.orm import Session

from app.db import Write
from app.errors import OtpConsumed
from app.models import RequestStatus, SigningRequest
from app.services.credential_rules import refuse_spent_sad
from app.services.signing.statements import SPEND_OTP, loaded_as


def spend_otp(session: Session, request: SigningRequest, **values: object) -> None:
    """Spend the OTP `check_otp_and_pin` just accepted, once: on a signature (native API) or on
    a SAD (CSC). `values` are the columns it sets."""
    spent = session.connection().execute(SPEND_OTP, {"request_id": request.id, **values}).first()
    if spent is None:
        raise OtpConsumed("this OTP was already used")
    loaded_as(request, **values)


def spend_checked_otp(request: SigningRequest, **values: object) -> Write:
    """`spend_otp` as a write to send with the signature (`SignatureMaker.sign_once`), for a
    request whose attempt this transaction has just counted: that conditional UPDATE (pending,
    no SAD) holds the request's row lock until the commit, so nothing can spend it between, and
    this one matches. The signature's unique request_id stays the last defence."""
    loaded_as(request, **values)
    return Write(SPEND_OTP, {"request_id": request.id, **values})


def spend_sad(session: Session, request: SigningRequest, now: datetime) -> None:
    """Spend a SAD the caller has verified on its request's one signature: one SAD, one
    signature."""
    consumed = session.execute(
        update(SigningRequest)
        .where(
            SigningRequest.id == request.id,
            SigningRequest.status == RequestStatus.PENDING,
            SigningRequest.authorized_at.is_not(None),
            SigningRequest.sad_expires_at > now,
        )
        .values(status=RequestStatus.SIGNED, finished_at=now)
        .returning(SigningRequest.id)
        .execution_options(synchronize_session=False)
    ).first()
    if consumed is None:
        session.refresh(request)
        refuse_spent_sad(request, now)
        raise OtpConsumed("the SAD was already used")
    loaded_as(request, status=RequestStatus.SIGNED, finished_at=now)
