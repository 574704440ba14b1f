"""MyGPKI Mobile: register and activate a device, fetch its OTPs, remove it; JDN's view."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response, status

from app.deps import ClockDep, JdnAdminDep, RuntimeDep, ServicesDep
from app.errors import (
    ActivationCodeConsumed,
    ActivationCodeExpired,
    ActivationCodeRejected,
    ActivationLocked,
    Conflict,
    DeviceNotEligible,
    Forbidden,
    NoEmailAddress,
    NotFound,
    RateLimited,
    ServiceUnavailable,
    SignatureRejected,
    Unauthenticated,
    UnregisteredPhone,
)
from app.models.device import Device
from app.routers.lifecycle_deps import MyKadPath
from app.schemas.devices import (
    DeviceActivationIn,
    DeviceMessagesOut,
    DeviceOut,
    DeviceRegistered,
    DeviceRegistrationIn,
    OtpMessageOut,
)
from app.schemas.problem import BODY_PROBLEMS, problem_responses, response_links
from app.services.devices.auth import SignedRequest
from app.services.devices.feed import MAX_WAIT_SECONDS, MessageFeed
from app.services.devices.registration import DeviceRegistration
from app.services.devices.service import DeviceService, mask_phone_end

router = APIRouter(tags=["devices"])


async def get_device_service(services: ServicesDep) -> DeviceService:
    return services.devices


async def get_message_feed(runtime: RuntimeDep) -> MessageFeed:
    # No SessionDep here: a long-poll must not hold a database slot while it waits.
    return MessageFeed(
        sessions=runtime.sessions,
        database_slots=runtime.database_slots,
        clock=runtime.clock,
        seal_key=runtime.keys.outbox_seal,
        audit=runtime.audit_log,
        max_skew_seconds=runtime.settings.device_signature_max_skew_seconds,
        poll_seconds=runtime.settings.device_message_poll_seconds,
    )


async def read_signed_request(request: Request) -> SignedRequest:
    """The request as the device signed it: method, URL with the path as sent, every header
    line, and the body bytes (for its Content-Digest)."""
    body = await request.body()
    # Some servers put the query in raw_path too; RFC 9421's @path is the path alone.
    raw_path = request.scope.get("raw_path") or request.url.path.encode()
    path = raw_path.split(b"?", 1)[0].decode("latin-1")
    query = request.scope.get("query_string", b"").decode("latin-1")
    host = request.headers.get("host") or "localhost"
    url = f"{request.url.scheme}://{host}{path}" + (f"?{query}" if query else "")
    return SignedRequest(
        method=request.method,
        url=url,
        headers=tuple(request.headers.items()),
        body=body,
    )


DeviceServiceDep = Annotated[DeviceService, Depends(get_device_service)]
MessageFeedDep = Annotated[MessageFeed, Depends(get_message_feed)]
SignedRequestDep = Annotated[SignedRequest, Depends(read_signed_request)]

SIGNATURE_PROBLEMS = (SignatureRejected, ServiceUnavailable)


@router.post(
    "/v1/devices",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=DeviceRegistered,
    responses=problem_responses(
        *BODY_PROBLEMS,
        DeviceNotEligible,
        UnregisteredPhone,
        NoEmailAddress,
        RateLimited,
        ServiceUnavailable,
    ),
    openapi_extra=response_links(
        202,
        "device_id",
        "/device_id",
        ActivateDevice="activate_device_v1_devices__device_id__activation_post",
    ),
)
def register_device(
    body: DeviceRegistrationIn, request: Request, devices: DeviceServiceDep, clock: ClockDep
) -> DeviceRegistered:
    """Register the MyGPKI Mobile app on a phone or tablet (no API key).

    The device must be eligible first: Android 8 or later, iOS 12 or later, HarmonyOS in any
    version, and a SIM card (`device_not_eligible` names the rule). Then the MyKad and the
    phone number must match the person's record in MyGPKI; an unknown MyKad answers exactly
    like a wrong number (`phone_mismatch`): update the number in the MyGPKI portal first.
    A 6-digit activation code goes to the person's registered e-mail address; a newer
    registration ends an older one still waiting. Rate-limited per MyKad and per client
    address (`rate_limited` with `Retry-After`).
    """
    device = devices.register(
        DeviceRegistration(
            mykad=body.mykad,
            phone=body.phone,
            platform=body.platform,
            os_version=body.os_version,
            has_sim=body.has_sim,
            model=body.model,
            client_address=request.client.host if request.client else "",
        ),
        clock.now(),
    )
    return DeviceRegistered(
        device_id=device.id,
        status="pending_activation",
        activation_expires_at=device.activation_expires_at,
    )


@router.post(
    "/v1/devices/{device_id}/activation",
    response_model=DeviceOut,
    responses=problem_responses(
        *BODY_PROBLEMS,
        NotFound,
        ActivationCodeConsumed,
        ActivationLocked,
        ActivationCodeExpired,
        ActivationCodeRejected,
        Conflict,
        ServiceUnavailable,
    ),
)
def activate_device(
    device_id: str, body: DeviceActivationIn, devices: DeviceServiceDep, clock: ClockDep
) -> DeviceOut:
    """Activate the device with the e-mailed code and give it its public key (no API key).

    `public_key` is the app's ECDSA P-256 key (PEM); from now on every request of this device
    is signed with it (RFC 9421, `ecdsa-p256-sha256`, `keyid` = `device_id`, covering
    `@method`, `@path` and, with a body, `content-digest`; `created` within 60 s; a new
    `nonce` each time). The person's previous device, on any platform, is deactivated at once
    and the person is e-mailed. The code is single-use, expires, and allows three tries:
    answers `validation_error` (not counted), `otp_consumed` (used, or replaced by a newer
    registration), `request_locked`, `otp_expired`, then `authorization_failed` with
    `attempts_remaining` for a wrong code.
    """
    activation = devices.activate(device_id, body.code, body.public_key, clock.now())
    return device_out(activation.device)


@router.get(
    "/v1/devices/{device_id}/messages",
    response_model=DeviceMessagesOut,
    responses=problem_responses(*SIGNATURE_PROBLEMS),
)
async def fetch_messages(
    device_id: str,
    request: Request,
    signed: SignedRequestDep,
    feed: MessageFeedDep,
    wait: Annotated[
        int,
        Query(
            ge=0,
            le=MAX_WAIT_SECONDS,
            description="Long-poll: wait up to this many seconds for a message to arrive",
        ),
    ] = 0,
) -> DeviceMessagesOut:
    """The device's pending OTP messages (signed request), each delivered once, oldest first.

    Messages wait for the device while it is off or offline (store-and-forward) and are valid
    for the OTP's own window, counted from issue: nothing expired is ever delivered. With
    `wait`, the answer comes as soon as a message arrives (within a second of its issue), or
    empty when the wait is over. A deactivated device gets `unauthenticated`.
    """

    async def is_connected() -> bool:
        return not await request.is_disconnected()

    messages = await feed.fetch(device_id, signed, wait, is_connected)
    return DeviceMessagesOut(
        messages=[
            OtpMessageOut(
                request_id=message.request_id,
                otp=message.otp,
                document_name=message.document_name,
                requesting_system=message.requesting_system,
                hash_algorithm=message.hash_algorithm,
                document_fingerprint=message.document_fingerprint,
                issued_at=message.issued_at,
                expires_at=message.expires_at,
            )
            for message in messages
        ]
    )


@router.delete(
    "/v1/devices/{device_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=problem_responses(*SIGNATURE_PROBLEMS),
)
def remove_device(
    device_id: str, signed: SignedRequestDep, devices: DeviceServiceDep, clock: ClockDep
) -> Response:
    """The device removes itself (signed request), as the iOS app's "delete account" does.

    It receives nothing more; registering again starts over. (An uninstalled Android app
    simply never calls again; it stays until another device is activated or JDN
    deactivates it.)
    """
    devices.remove_self(device_id, signed, clock.now())
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/v1/users/{mykad}/devices",
    response_model=list[DeviceOut],
    responses=problem_responses(Unauthenticated, Forbidden, NotFound),
)
def list_devices(
    caller: JdnAdminDep, mykad: MyKadPath, devices: DeviceServiceDep
) -> list[DeviceOut]:
    """Every device the person registered, newest first, with its status (JDN)."""
    del caller
    return [device_out(device) for device in devices.of_person(mykad)]


@router.post(
    "/v1/devices/{device_id}/deactivation",
    response_model=DeviceOut,
    responses=problem_responses(Unauthenticated, Forbidden, NotFound),
)
def deactivate_device(
    device_id: str, caller: JdnAdminDep, devices: DeviceServiceDep, clock: ClockDep
) -> DeviceOut:
    """Deactivate a device (JDN): it receives no OTP and is refused from now on. A device
    already deactivated is answered as it is."""
    return device_out(devices.deactivate_by_administrator(caller, device_id, clock.now()))


def device_out(device: Device) -> DeviceOut:
    return DeviceOut(
        device_id=device.id,
        status=device.status,
        platform=device.platform,
        os_version=device.os_version,
        model=device.model,
        phone=mask_phone_end(device.phone_last4),
        created_at=device.created_at,
        activation_expires_at=(
            device.activation_expires_at if device.status == "pending_activation" else None
        ),
        activated_at=device.activated_at,
        deactivated_at=device.deactivated_at,
        deactivation_reason=device.deactivation_reason,
        last_seen_at=device.last_seen_at,
    )
