"""RFC 9421 on the device calls: every way a signed request can be wrong is a 401."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import func, select

from app.clock import FrozenClock
from app.models.device import DeviceNonce
from app.runtime import Runtime
from tests.factories import Factory
from tests.mobile_app import MobileApp, tampered


@pytest.fixture
def app(factory: Factory) -> MobileApp:
    return factory.mobile_device(factory.person())


async def send(client: httpx.AsyncClient, request: httpx.Request) -> httpx.Response:
    return await client.send(request)


def refused(response: httpx.Response, *words: str) -> None:
    assert response.status_code == 401, response.text
    problem = response.json()
    assert problem["code"] == "unauthenticated"
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"].startswith("Signature")
    for word in words:
        assert word in problem["detail"], problem["detail"]


async def test_a_well_signed_fetch_is_accepted(
    client: httpx.AsyncClient, app: MobileApp, clock: FrozenClock
) -> None:
    response = await send(client, app.fetch_request(client, created=clock.now()))
    assert response.status_code == 200, response.text
    assert response.json() == {"messages": []}


async def test_no_signature(client: httpx.AsyncClient, app: MobileApp) -> None:
    refused(await client.get(f"/v1/devices/{app.device_id}/messages"), "RFC 9421")


async def test_a_bearer_key_is_no_substitute(
    client: httpx.AsyncClient, app: MobileApp, factory: Factory
) -> None:
    key = factory.client("jdn", "jdn_admin")
    response = await client.get(
        f"/v1/devices/{app.device_id}/messages", headers={"Authorization": f"Bearer {key}"}
    )
    refused(response)


async def test_a_signature_by_another_key(
    client: httpx.AsyncClient, app: MobileApp, clock: FrozenClock
) -> None:
    other = ec.generate_private_key(ec.SECP256R1())
    request = app.fetch_request(client, created=clock.now(), private_key=other)
    refused(await send(client, request), "does not verify")


async def test_a_changed_signature_value(
    client: httpx.AsyncClient, app: MobileApp, clock: FrozenClock
) -> None:
    request = app.fetch_request(client, created=clock.now())
    value = request.headers["Signature"]
    flipped = value[:-3] + ("A" if value[-3] != "A" else "B") + value[-2:]
    request.headers["Signature"] = flipped
    refused(await send(client, request))


async def test_the_key_id_of_another_device(
    client: httpx.AsyncClient, app: MobileApp, factory: Factory, clock: FrozenClock
) -> None:
    other = factory.mobile_device(factory.person(), phone="+60123456789")
    # Signed with this app's own key, but naming the other device as keyid.
    request = app.fetch_request(client, created=clock.now(), key_id=other.device_id)
    refused(await send(client, request), "keyid")
    # And the other device's path, with this app's id as keyid.
    request = other.fetch_request(client, created=clock.now(), key_id=app.device_id)
    refused(await send(client, request), "keyid")


async def test_another_devices_messages_with_a_valid_signature_of_its_own(
    client: httpx.AsyncClient, app: MobileApp, factory: Factory, clock: FrozenClock
) -> None:
    other = factory.mobile_device(factory.person())
    request = app.fetch_request(client, created=clock.now())
    # The path is re-targeted at the other device after signing: @path no longer matches.
    moved = httpx.Request(
        "GET",
        request.url.copy_with(path=f"/v1/devices/{other.device_id}/messages"),
        headers=request.headers,
    )
    refused(await send(client, moved))


@pytest.mark.parametrize("seconds", [-61, 61, -3600])
async def test_created_too_far_from_the_server_clock(
    client: httpx.AsyncClient, app: MobileApp, clock: FrozenClock, seconds: int
) -> None:
    created = clock.now() + timedelta(seconds=seconds)
    refused(await send(client, app.fetch_request(client, created=created)), "within 60 s")


@pytest.mark.parametrize("seconds", [-60, 60])
async def test_created_at_the_edge_of_the_window_is_accepted(
    client: httpx.AsyncClient, app: MobileApp, clock: FrozenClock, seconds: int
) -> None:
    created = clock.now() + timedelta(seconds=seconds)
    response = await send(client, app.fetch_request(client, created=created))
    assert response.status_code == 200, response.text


async def test_a_replayed_nonce(
    client: httpx.AsyncClient, app: MobileApp, clock: FrozenClock, runtime: Runtime
) -> None:
    first = app.fetch_request(client, created=clock.now(), nonce="n-0123456789abcdef")
    assert (await send(client, first)).status_code == 200
    replay = app.fetch_request(client, created=clock.now(), nonce="n-0123456789abcdef")
    refused(await send(client, replay), "nonce")
    # The very same request, sent again, is a replay too.
    refused(await send(client, first), "nonce")


async def test_nonces_are_forgotten_once_their_signature_is_stale(
    client: httpx.AsyncClient, app: MobileApp, clock: FrozenClock, runtime: Runtime
) -> None:
    for _ in range(3):
        assert (
            await send(client, app.fetch_request(client, created=clock.now()))
        ).status_code == 200
    clock.advance(seconds=121)
    assert (await send(client, app.fetch_request(client, created=clock.now()))).status_code == 200
    with runtime.sessions() as session:
        assert session.scalar(select(func.count()).select_from(DeviceNonce)) == 1


@pytest.mark.parametrize("nonce", [None, "short"])
async def test_a_missing_or_weak_nonce(
    client: httpx.AsyncClient, app: MobileApp, clock: FrozenClock, nonce: str | None
) -> None:
    refused(
        await send(client, app.fetch_request(client, created=clock.now(), nonce=nonce)), "nonce"
    )


@pytest.mark.parametrize("components", [("@method",), ("@path",), ("@authority",)])
async def test_method_and_path_must_be_covered(
    client: httpx.AsyncClient, app: MobileApp, clock: FrozenClock, components: tuple[str, ...]
) -> None:
    request = app.fetch_request(client, created=clock.now(), components=components)
    refused(await send(client, request), "not covered")


async def test_more_components_may_be_covered(
    client: httpx.AsyncClient, app: MobileApp, clock: FrozenClock
) -> None:
    request = app.fetch_request(
        client, created=clock.now(), components=("@method", "@path", "@authority", "@query")
    )
    assert (await send(client, request)).status_code == 200


async def test_a_body_needs_a_covered_content_digest(
    client: httpx.AsyncClient, app: MobileApp, clock: FrozenClock
) -> None:
    request = app.delete_request(client, body=b"{}", created=clock.now(), digest_body=False)
    assert "content-digest" not in request.headers
    refused(await send(client, request), "Content-Digest")


async def test_a_tampered_body(
    client: httpx.AsyncClient, app: MobileApp, clock: FrozenClock
) -> None:
    request = app.delete_request(client, body=b'{"reason": "lost"}', created=clock.now())
    refused(await send(client, tampered(request, b'{"reason": "LOST"}')), "Content-Digest")
    # Signed properly, the same body is accepted.
    request = app.delete_request(client, body=b'{"reason": "lost"}', created=clock.now())
    assert (await send(client, request)).status_code == 204


async def test_an_unknown_device(client: httpx.AsyncClient, clock: FrozenClock) -> None:
    stranger = MobileApp("00000000-0000-4000-8000-000000000000")
    refused(await send(client, stranger.fetch_request(client, created=clock.now())), "no activated")


async def test_a_device_not_yet_activated(
    client: httpx.AsyncClient, factory: Factory, clock: FrozenClock
) -> None:
    person = factory.person()
    response = await client.post(
        "/v1/devices",
        json={
            "mykad": person.mykad,
            "phone": "0123456789",
            "platform": "android",
            "os_version": "13",
            "has_sim": True,
        },
    )
    pending = MobileApp(response.json()["device_id"])
    refused(await send(client, pending.fetch_request(client, created=clock.now())), "no activated")


async def test_a_signature_with_the_wrong_algorithm_label(
    client: httpx.AsyncClient, app: MobileApp, clock: FrozenClock
) -> None:
    request = app.fetch_request(client, created=clock.now())
    request.headers["Signature-Input"] = request.headers["Signature-Input"].replace(
        'alg="ecdsa-p256-sha256"', 'alg="ed25519"'
    )
    refused(await send(client, request))


async def test_two_signatures_are_refused(
    client: httpx.AsyncClient, app: MobileApp, clock: FrozenClock
) -> None:
    request = app.fetch_request(client, created=clock.now())
    _label, _, rest = request.headers["Signature-Input"].partition("=")
    signature = request.headers["Signature"].partition("=")[2]
    request.headers["Signature-Input"] += f", second={rest}"
    request.headers["Signature"] += f", second={signature}"
    refused(await send(client, request))
