"""How a MyGPKI Mobile device proves a request is its own: RFC 9421 HTTP Message Signatures.

A device holds no bearer secret. At activation it gives us its ECDSA P-256 public key; every
later request carries a `Signature-Input` / `Signature` pair made with the private key, which
never leaves the phone. We accept a request only when:

- the signature is `ecdsa-p256-sha256` with `keyid` = the device id of the path, by an active
  device, and verifies over at least `@method` and `@path`;
- a request with a body also covers `content-digest`, and that field matches the body
  (RFC 9530, sha-256 or sha-512);
- `created` is within `device_signature_max_skew_seconds` of our (injected) clock;
- its `nonce` was never accepted before for this device: the primary key of `device_nonces`
  refuses a second insert on every worker, and a nonce is kept only while its signature could
  still be fresh.

The cryptography and the signature base are the `http-message-signatures` library's; the
freshness, the nonce and the key lookup are ours.
"""

from __future__ import annotations

import hmac
import logging
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from http_message_signatures import (
    HTTPMessageSignaturesException,
    HTTPMessageVerifier,
    HTTPSignatureKeyResolver,
    InvalidSignature,
    VerificationKey,
    algorithms,
)
from sqlalchemy import Row, Table, bindparam, delete, insert, select, update
from sqlalchemy.orm import Session

from app.db import Write, select_after_writes, send_writes
from app.errors import SignatureRejected
from app.models import User
from app.models.device import Device, DeviceNonce, DeviceStatus

logger = logging.getLogger("roamsign.devices")

SIGNATURE_ALGORITHM = algorithms.ECDSA_P256_SHA256
REQUIRED_COMPONENTS = ("@method", "@path")
# Printable ASCII without spaces, long enough not to repeat by chance.
_NONCE = re.compile(r"[\x21-\x7e]{16,128}")
_MAX_PUBLIC_KEY_PEM = 4096

# Every signed device request runs these: built once, run on the session's connection (or
# sent with the caller's audit event). Building a statement and its cache key cost more than
# running it, and the ORM has nothing to synchronise (no nonce is ever loaded as an object).
_NONCES: Table = DeviceNonce.__table__  # type: ignore[assignment]
_DEVICES: Table = Device.__table__  # type: ignore[assignment]
_USERS: Table = User.__table__  # type: ignore[assignment]
_FORGET_EXPIRED_NONCES = delete(_NONCES).where(
    _NONCES.c.device_id == bindparam("device_id"), _NONCES.c.expires_at < bindparam("now")
)
# A nonce already stored breaks the table's primary key: a replay (a concurrent twin waits for
# the first one's commit, then breaks it). The expired ones are forgotten before, in the read.
_REMEMBER_NONCE = insert(_NONCES)
_SEEN = update(_DEVICES).where(_DEVICES.c.id == bindparam("device_id"))
# The device that signs and its person, one row (none for an unknown id). Callers may add
# columns and joins (the inbox fetch adds the device's deliverable messages).
SIGNER = (
    select(
        _DEVICES.c.id.label("device_id"),
        _DEVICES.c.user_id,
        _DEVICES.c.status,
        _DEVICES.c.public_key_pem,
        _USERS.c.mykad,
    )
    .select_from(_DEVICES.join(_USERS, _USERS.c.id == _DEVICES.c.user_id))
    .where(_DEVICES.c.id == bindparam("device_id"))
)
_REPLAYED = "this nonce was already used: sign every request with a new nonce"


@dataclass(frozen=True)
class SigningDevice:
    """The active device that signed a request, and its person's MyKad."""

    id: str
    user_id: str
    mykad: str


def forget_expired_nonces(device_id: str, now: datetime) -> Write:
    """The device's nonces whose signatures can no longer be fresh, deleted: for the statement
    that reads the device (`select_after_writes`)."""
    return Write(_FORGET_EXPIRED_NONCES, {"device_id": device_id, "now": now})


@dataclass(frozen=True)
class SignedRequest:
    """A device's request as it arrived: what RFC 9421 components are computed from.

    `url` is absolute, with the path exactly as sent (percent-encoding untouched); `headers`
    keeps every field line in order.
    """

    method: str
    url: str
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def has_signature(self) -> bool:
        names = {name.lower() for name, _ in self.headers}
        return {"signature-input", "signature"} <= names


@dataclass(frozen=True)
class VerifiedSignature:
    created: datetime
    nonce: str


def load_device_public_key(pem: str) -> ec.EllipticCurvePublicKey:
    """The app's public key: PEM SubjectPublicKeyInfo of an ECDSA P-256 key, else ValueError."""
    if len(pem) > _MAX_PUBLIC_KEY_PEM:
        raise ValueError("public_key is too long for a P-256 key")
    try:
        key = serialization.load_pem_public_key(pem.encode())
    except (ValueError, TypeError, UnicodeEncodeError):
        raise ValueError("public_key must be a PEM public key (BEGIN PUBLIC KEY)") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError("public_key must be an ECDSA P-256 (secp256r1) key")
    return key


class DeviceAuthenticator:
    """Checks a device's signed request in the caller's session and records its nonce.

    `authenticate` does it all. The inbox fetch takes its steps apart to save round trips:
    `require_signature` before any read, `verify` on the row it read with `SIGNER`'s columns
    (after `forget_expired_nonces`), and the writes `verify` returns sent with its audit event
    inside `rejections_logged`. Whichever way, the device's row is read, its key checks the
    signature, and the nonce is written in the same transaction before anything is answered."""

    def __init__(self, session: Session, max_skew_seconds: int) -> None:
        self.session = session
        self.max_skew = timedelta(seconds=max_skew_seconds)

    def authenticate(self, request: SignedRequest, device_id: str, now: datetime) -> SigningDevice:
        """The active device that signed `request`, or `SignatureRejected` saying why not."""
        self.require_signature(request, device_id)
        signer = select_after_writes(
            self.session,
            SIGNER,
            {"device_id": device_id},
            [forget_expired_nonces(device_id, now)],
            core=True,
        ).first()
        writes = self.verify(request, device_id, signer, now)
        with rejections_logged(device_id):
            send_writes(self.session, writes)
        assert signer is not None  # verified
        return SigningDevice(id=signer.device_id, user_id=signer.user_id, mykad=signer.mykad)

    def require_signature(self, request: SignedRequest, device_id: str) -> None:
        if not request.has_signature():
            raise self._rejected(
                device_id,
                "sign this request with RFC 9421 HTTP Message Signatures (Signature-Input and "
                "Signature headers, ecdsa-p256-sha256, keyid = the device id)",
            )

    def verify(
        self, request: SignedRequest, device_id: str, signer: Row[Any] | None, now: datetime
    ) -> list[Write]:
        """`request` checked against `signer` (a row with `SIGNER`'s columns, None for no
        device): the writes that remember its nonce (a replay raises `SignatureRejected` when
        they are sent) and when the device was last seen, or the refusal."""
        if signer is None or signer.public_key_pem is None:
            raise self._rejected(device_id, "no activated device has this id")
        if signer.status != DeviceStatus.ACTIVE:
            raise self._rejected(
                device_id,
                "this device is no longer active (replaced by another device, removed or "
                "deactivated); register it again",
            )
        verified = verify_signature(
            request, signer.device_id, signer.public_key_pem, now, self.max_skew
        )
        # Remembered past the last instant its signature could be fresh, with the same margin
        # again for workers whose clocks differ a little.
        nonce = {
            "device_id": signer.device_id,
            "nonce": verified.nonce,
            "expires_at": verified.created + 2 * self.max_skew,
        }
        return [
            Write(_REMEMBER_NONCE, nonce, conflict=SignatureRejected(_REPLAYED)),
            Write(_SEEN, {"device_id": signer.device_id, "last_seen_at": now}),
        ]

    @staticmethod
    def _rejected(device_id: str, reason: str) -> SignatureRejected:
        logger.info("device.signature.rejected", extra={"device_id": device_id, "reason": reason})
        return SignatureRejected(reason)


@contextmanager
def rejections_logged(device_id: str) -> Iterator[None]:
    """Around the sending of `DeviceAuthenticator.verify`'s writes: a replay is logged as every
    other refusal of a signature is."""
    try:
        yield
    except SignatureRejected:
        logger.info(
            "device.signature.rejected", extra={"device_id": device_id, "reason": _REPLAYED}
        )
        raise


def verify_signature(
    request: SignedRequest,
    device_id: str,
    public_key_pem: str,
    now: datetime,
    max_skew: timedelta,
) -> VerifiedSignature:
    """Verify one RFC 9421 signature by this device's key; raises `SignatureRejected`."""
    verifier = _ClockedVerifier(now, max_skew, _DeviceKeyResolver(device_id, public_key_pem))
    try:
        results = verifier.verify(
            _Message(request),
            max_age=None,  # freshness is ours, both ways: see _ClockedVerifier
            require_components=REQUIRED_COMPONENTS,
            body=request.body,
        )
    except HTTPMessageSignaturesException as error:
        reason = str(error) or "the signature does not verify with this device's public key"
        logger.info("device.signature.rejected", extra={"device_id": device_id, "reason": reason})
        raise SignatureRejected(f"request signature not accepted: {reason}") from None
    (result,) = results  # several signatures without a tag are refused by the library
    nonce = result.nonce
    if nonce is None or not _NONCE.fullmatch(nonce):
        reason = "the signature needs a nonce parameter: 16 to 128 printable characters"
        logger.info("device.signature.rejected", extra={"device_id": device_id, "reason": reason})
        raise SignatureRejected(f"{reason}, new for every request")
    created = result.parameters["created"]
    assert isinstance(created, int)  # checked by _ClockedVerifier
    return VerifiedSignature(created=datetime.fromtimestamp(created, UTC), nonce=nonce)


class _ClockedVerifier(HTTPMessageVerifier):
    """The library's verifier, with `created` checked against our clock, not the OS's, and
    refused when too old as well as too far in the future."""

    def __init__(self, now: datetime, max_skew: timedelta, resolver: HTTPSignatureKeyResolver):
        super().__init__(signature_algorithm=SIGNATURE_ALGORITHM, key_resolver=resolver)
        self._now = now
        self._max_skew = max_skew

    def validate_created_and_expires(self, sig_input: Any, max_age: Any = None) -> None:
        del max_age
        params = sig_input.params
        created = params.get("created")
        if type(created) is not int:
            raise InvalidSignature("the signature needs a created parameter (a Unix time)")
        try:
            created_at = datetime.fromtimestamp(created, UTC)
        except (OverflowError, OSError, ValueError):
            raise InvalidSignature("the created parameter is not a valid time") from None
        if abs(created_at - self._now) > self._max_skew:
            raise InvalidSignature(
                f"created is {abs(created_at - self._now).total_seconds():.0f} s from the "
                f"server's clock; it must be within {self._max_skew.total_seconds():.0f} s"
            )
        expires = params.get("expires")
        if expires is not None and (type(expires) is not int or expires < self._now.timestamp()):
            raise InvalidSignature("the signature has expired (expires parameter)")


class _DeviceKeyResolver(HTTPSignatureKeyResolver):
    """Knows one key: the device's own; any other keyid is refused."""

    def __init__(self, device_id: str, public_key_pem: str) -> None:
        self._device_id = device_id
        self._public_key = load_device_public_key(public_key_pem)

    def resolve_public_key(self, key_id: str) -> VerificationKey | None:
        if not hmac.compare_digest(key_id.encode(), self._device_id.encode()):
            raise InvalidSignature("keyid must be this device's id (the id in the path)")
        return self._public_key

    def resolve_private_key(self, key_id: str) -> None:
        raise NotImplementedError("the server never signs as a device")


class _FieldLines:
    """The read-only header view the library asks for: every field line, in order."""

    def __init__(self, lines: tuple[tuple[str, str], ...]) -> None:
        self._lines = lines

    def items(self) -> Iterable[tuple[str, str]]:
        return self._lines

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys(name for name, _ in self._lines))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and any(
            field.lower() == name.lower() for field, _ in self._lines
        )


class _Message:
    """A request as the library's component resolver reads it."""

    def __init__(self, request: SignedRequest) -> None:
        self.method = request.method.upper()
        self.url = request.url
        self.headers = _FieldLines(request.headers)
