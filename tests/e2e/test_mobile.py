"""MyGPKI Mobile end to end: a simulated app against a real server, e-mail through SMTP.

The app holds its own P-256 key and signs every call with RFC 9421 (the library's signer on
real httpx requests); the codes come from the e-mails the sink received, as the person would
read them. On PostgreSQL the server runs two workers, so a long-poll often waits in another
process than the one that issues the OTP.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta
from email.message import EmailMessage
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from app.services.mail.sink import MailSink
from tests.e2e.conftest import Server, ServerStarter
from tests.factories import Factory, Person
from tests.helpers import signing_request_body
from tests.mobile_app import ELIGIBLE_ANDROID, MobileApp, activation_code, tampered


@pytest.fixture
def workers(is_postgres: bool) -> int:
    return 2 if is_postgres else 1


def text_of(message: EmailMessage) -> str:
    body = message.get_body(preferencelist=("plain",))
    assert body is not None
    return str(body.get_content())


def registration(person: Person, **overrides: Any) -> dict[str, Any]:
    return {"mykad": person.mykad, "phone": "+60123456789", **ELIGIBLE_ANDROID, **overrides}


def register(
    server: Server, sink: MailSink, person: Person, **overrides: Any
) -> tuple[MobileApp, str]:
    with server.client() as client:
        response = client.post("/v1/devices", json=registration(person, **overrides))
    assert response.status_code == 202, response.text
    app = MobileApp(response.json()["device_id"])
    mail = sink.wait_for(lambda m: f"Reference: {app.device_id}" in text_of(m), timeout=10)
    assert mail["To"] == person.email
    return app, activation_code(text_of(mail))


def activate(server: Server, app: MobileApp, code: str) -> httpx.Response:
    with server.client() as client:
        return client.post(
            f"/v1/devices/{app.device_id}/activation",
            json={"code": code, "public_key": app.public_key_pem},
        )


def active_app(server: Server, sink: MailSink, person: Person, **overrides: Any) -> MobileApp:
    app, code = register(server, sink, person, **overrides)
    activated = activate(server, app, code)
    assert activated.status_code == 200, activated.text
    return app


def fetch(server: Server, app: MobileApp, wait: int = 0, **sign: Any) -> httpx.Response:
    with httpx.Client(base_url=server.url, timeout=60) as client:
        return client.send(app.fetch_request(client, wait=wait, **sign))


def request_otp(server: Server, key: str, person: Person, **overrides: Any) -> httpx.Response:
    with server.client(key) as client:
        return client.post("/v1/signing-requests", json=signing_request_body(person, **overrides))


def unauthenticated(response: httpx.Response, words: str = "") -> None:
    assert response.status_code == 401, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"].startswith("Signature")
    assert response.json()["code"] == "unauthenticated"
    assert words in response.json()["detail"]


def test_registration_refusals_reveal_nothing(
    start_server: ServerStarter, e2e_factory: Factory, sink: MailSink
) -> None:
    person = e2e_factory.person(email="aisyah@jdn.gov.my", phone="+60123456789")
    server = start_server()
    with server.client() as client:
        for overrides, rule in (
            ({"os_version": "7.1"}, "Android 8 or later"),
            ({"platform": "ios", "os_version": "11.4"}, "iOS 12 or later"),
            ({"has_sim": False}, "SIM card"),
        ):
            refused = client.post("/v1/devices", json=registration(person, **overrides))
            assert refused.status_code == 422
            assert refused.json()["code"] == "device_not_eligible"
            assert rule in refused.json()["detail"]

        wrong_phone = client.post("/v1/devices", json=registration(person, phone="0199999999"))
        unknown = client.post(
            "/v1/devices", json=registration(person, mykad="880808-08-8888", phone="0199999999")
        )
        assert wrong_phone.status_code == unknown.status_code == 422
        assert wrong_phone.json() == unknown.json()
        assert wrong_phone.json()["code"] == "phone_mismatch"
        assert "portal" in wrong_phone.json()["detail"]

    _app, code = register(server, sink, person, platform="harmonyos", os_version="3.0")
    assert len(code) == 6
    # The refused registrations sent nothing.
    assert len(sink.messages) == 1
    assert "Kod / Code: " in text_of(sink.messages[0]).splitlines()[0]


def test_activation_code_tries_and_reuse(
    start_server: ServerStarter, e2e_factory: Factory, sink: MailSink
) -> None:
    person = e2e_factory.person()
    server = start_server()

    app, code = register(server, sink, person)
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    for remaining in (2, 1, 0):
        refused = activate(server, app, wrong)
        assert refused.status_code == 403
        assert refused.json() == refused.json() | {
            "code": "authorization_failed",
            "attempts_remaining": remaining,
        }
    locked = activate(server, app, code)
    assert locked.status_code == 423 and locked.json()["code"] == "request_locked"

    app, code = register(server, sink, person)
    assert activate(server, app, code).status_code == 200
    reused = activate(server, app, code)
    assert reused.status_code == 409 and reused.json()["code"] == "otp_consumed"
    assert fetch(server, app).status_code == 200


def test_signature_checks(
    start_server: ServerStarter, e2e_factory: Factory, sink: MailSink
) -> None:
    person = e2e_factory.person()
    other_person = e2e_factory.person()
    server = start_server()
    app = active_app(server, sink, person)
    other = active_app(server, sink, other_person)

    assert fetch(server, app).status_code == 200
    with httpx.Client(base_url=server.url, timeout=30) as client:
        unauthenticated(client.get(f"/v1/devices/{app.device_id}/messages"), "RFC 9421")
        bad_key = ec.generate_private_key(ec.SECP256R1())
        unauthenticated(
            client.send(app.fetch_request(client, private_key=bad_key)), "does not verify"
        )
        # Its own key, another device's id: neither its own path nor the other's accepts it.
        unauthenticated(client.send(app.fetch_request(client, key_id=other.device_id)), "keyid")
        unauthenticated(client.send(other.fetch_request(client, key_id=app.device_id)), "keyid")
        stale = datetime.now() - timedelta(seconds=90)  # the signer's local time
        unauthenticated(client.send(app.fetch_request(client, created=stale)), "within 60 s")
        future = datetime.now() + timedelta(seconds=90)
        unauthenticated(client.send(app.fetch_request(client, created=future)), "within 60 s")

        once = app.fetch_request(client, nonce="replay-0123456789abcdef")
        assert client.send(once).status_code == 200
        unauthenticated(client.send(once), "nonce")
        unauthenticated(client.send(app.fetch_request(client, nonce=None)), "nonce")

        undigested = app.delete_request(client, body=b"{}", digest_body=False)
        unauthenticated(client.send(undigested), "Content-Digest")
        signed = app.delete_request(client, body=b'{"reason": "lost"}')
        unauthenticated(client.send(tampered(signed, b'{"reason": "sold"}')), "Content-Digest")
    # None of the refused calls did anything: the device still works.
    assert fetch(server, app).status_code == 200


def test_one_active_device_per_person(
    start_server: ServerStarter, e2e_factory: Factory, sink: MailSink
) -> None:
    person = e2e_factory.person()
    server = start_server()
    android = active_app(server, sink, person)
    assert fetch(server, android).status_code == 200

    iphone = active_app(server, sink, person, platform="ios", os_version="17.5", model="iPhone")
    unauthenticated(fetch(server, android), "no longer active")
    assert fetch(server, iphone).status_code == 200
    notice = sink.wait_for(
        lambda m: "activated" in str(m["Subject"]) and "iOS" in text_of(m), timeout=10
    )
    assert "Android" in text_of(notice) and "deactivated" in text_of(notice)


def test_the_otp_reaches_the_waiting_app_within_a_second_then_signs(
    start_server: ServerStarter, e2e_factory: Factory, sink: MailSink, workers: int
) -> None:
    person = e2e_factory.person()
    signer = e2e_factory.client("igfmas", "signer")
    server = start_server(workers=workers)
    app = active_app(server, sink, person)

    for round_ in range(3):  # several rounds: with two workers, both sides of the split
        outcome: dict[str, Any] = {}

        def long_poll(outcome: dict[str, Any] = outcome) -> None:
            response = fetch(server, app, wait=20)
            outcome["at"] = time.monotonic()
            outcome["response"] = response

        poll = threading.Thread(target=long_poll)
        poll.start()
        time.sleep(0.5)
        issued_at = time.monotonic()
        created = request_otp(server, signer, person, channel="mobile", document=f"R{round_}")
        assert created.status_code == 201, created.text
        assert created.json()["destination"] == "MyGPKI Mobile (android, ****6789)"
        poll.join(timeout=25)
        assert outcome["response"].status_code == 200, outcome["response"].text
        assert outcome["at"] - issued_at < 1.0
        (message,) = outcome["response"].json()["messages"]
        assert message["request_id"] == created.json()["id"]
        assert message["requesting_system"] == "igfmas"

        with server.client(signer) as client:
            signed = client.post(
                f"/v1/signing-requests/{message['request_id']}/signature",
                json={"otp": message["otp"], "pin": person.pin},
            )
        assert signed.status_code == 201, signed.text
        assert signed.json()["signature_format"] == "cms"
    assert [m for m in sink.messages if m["X-Roamsign-Request-Id"]] == []  # no OTP e-mail
    # The server logged no OTP and no full MyKad.
    assert message["otp"] not in server.log() and person.mykad not in server.log()


def test_what_expired_is_never_delivered_nor_accepted(
    start_server: ServerStarter, e2e_factory: Factory, sink: MailSink
) -> None:
    person = e2e_factory.person()
    newcomer = e2e_factory.person()
    signer = e2e_factory.client("igfmas", "signer")
    server = start_server(
        ROAMSIGN_OTP_TTL_SECONDS="10", ROAMSIGN_DEVICE_ACTIVATION_TTL_SECONDS="10"
    )
    app = active_app(server, sink, person)
    pending, code = register(server, sink, newcomer)

    # The phone is off: one OTP now, another later; it comes back after the first expired.
    first = request_otp(server, signer, person, document="A").json()
    time.sleep(6)
    second = request_otp(server, signer, person, document="B").json()
    time.sleep(5)
    messages = fetch(server, app).json()["messages"]
    assert [m["request_id"] for m in messages] == [second["id"]]
    assert first["id"] != second["id"]

    expired = activate(server, pending, code)
    assert expired.status_code == 410 and expired.json()["code"] == "otp_expired"


def test_each_message_once_even_with_concurrent_fetches(
    start_server: ServerStarter, e2e_factory: Factory, sink: MailSink, workers: int
) -> None:
    person = e2e_factory.person()
    signer = e2e_factory.client("igfmas", "signer")
    # Four OTPs for one person from one signer within the minute.
    server = start_server(workers=workers, ROAMSIGN_OTPS_PER_SIGNER_PERSON_PER_MINUTE="5")
    app = active_app(server, sink, person)

    def concurrently(count: int, wait: int) -> list[list[str]]:
        results: list[list[str]] = []
        lock = threading.Lock()
        barrier = threading.Barrier(count)

        def one() -> None:
            barrier.wait()
            response = fetch(server, app, wait=wait)
            assert response.status_code == 200, response.text
            with lock:
                results.append([m["request_id"] for m in response.json()["messages"]])

        threads = [threading.Thread(target=one) for _ in range(count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        return results

    # Two long-polls waiting when the OTP arrives: one of them gets it.
    outcome: list[list[str]] = []
    waiting = threading.Thread(target=lambda: outcome.extend(concurrently(2, 5)))
    waiting.start()
    time.sleep(0.5)
    issued = request_otp(server, signer, person, document="W").json()["id"]
    waiting.join(timeout=30)
    assert sorted(outcome, key=len) == [[], [issued]]

    # Three waiting messages, four fetches at once: each message once, in issue order.
    stored = [request_otp(server, signer, person, document=d).json()["id"] for d in "XYZ"]
    results = concurrently(4, 0)
    delivered = [request_id for result in results for request_id in result]
    assert sorted(delivered) == sorted(stored)
    for result in results:
        assert result == sorted(result, key=stored.index)


def test_auto_falls_back_to_email_without_a_device(
    start_server: ServerStarter, e2e_factory: Factory, sink: MailSink
) -> None:
    person = e2e_factory.person(email="muthu@mof.gov.my")
    signer = e2e_factory.client("eperolehan", "signer")
    server = start_server()
    created = request_otp(server, signer, person, channel="auto")
    assert created.status_code == 201
    assert created.json()["channel"] == "email"
    assert created.json()["destination"] == "m***@mof.gov.my"
    message = sink.wait_for(lambda m: m["X-Roamsign-Request-Id"] == created.json()["id"])
    assert text_of(message).startswith("Kod OTP / OTP code: ")
    refused = request_otp(server, signer, person, channel="mobile", document="other")
    assert refused.status_code == 409 and refused.json()["code"] == "no_active_device"


def test_deregistration_and_jdn_administration(
    start_server: ServerStarter, e2e_factory: Factory, sink: MailSink
) -> None:
    person = e2e_factory.person()
    signer = e2e_factory.client("igfmas", "signer")
    jdn = e2e_factory.client("jdn", "jdn_admin")
    server = start_server()

    iphone = active_app(server, sink, person, platform="ios", os_version="16.0")
    with httpx.Client(base_url=server.url, timeout=30) as client:
        removed = client.send(iphone.delete_request(client))
    assert removed.status_code == 204
    unauthenticated(fetch(server, iphone))
    refused = request_otp(server, signer, person, channel="mobile")
    assert refused.json()["code"] == "no_active_device"

    android = active_app(server, sink, person)
    with server.client(jdn) as admin:
        listed = admin.get(f"/v1/users/{person.mykad}/devices")
        assert listed.status_code == 200
        assert [(d["platform"], d["status"], d["deactivation_reason"]) for d in listed.json()] == [
            ("android", "active", None),
            ("ios", "deactivated", "removed_by_device"),
        ]
        deactivated = admin.post(f"/v1/devices/{android.device_id}/deactivation")
        assert deactivated.status_code == 200
        assert deactivated.json()["status"] == "deactivated"
    unauthenticated(fetch(server, android))
    assert request_otp(server, signer, person, channel="auto").json()["channel"] == "email"
    with server.client(signer) as not_jdn:
        assert not_jdn.get(f"/v1/users/{person.mykad}/devices").status_code == 403
