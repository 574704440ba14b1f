"""The pkcs11 key store in the running service: CA keys in the token, keys dropped at once on
revocation, renewal and a PIN lock, and a token outage answered 503 with nothing half-written."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import select

from app.clock import FrozenClock
from app.crypto.keys import DerivedKeys
from app.crypto.pkcs11 import Pkcs11KeyStore
from app.crypto.pkcs11_format import BLOB_MAGIC
from app.crypto.pkcs11_secrets import configured_data_key_file, provision_token_secrets
from app.main import create_app
from app.models import CertificateAuthority, Credential, SigningRequest
from app.runtime import Runtime
from app.services.ca import TOKEN_LABELS, token_label
from app.settings import Settings
from tests.api.conftest import Keys, assert_problem, bearer
from tests.api.lifecycle_steps import NEW_PIN, mail, request_signature, set_pin, sign
from tests.api.test_csc import Csc, digest_b64
from tests.factories import Factory, Person
from tests.helpers import queued_otp
from tests.softhsm import SoftHsmToken

WRONG_PIN = "902847"


@pytest.fixture
def settings(settings: Settings, softhsm_token: SoftHsmToken, master_key: bytes) -> Settings:
    on_token = settings.model_copy(
        update={
            "key_store": "pkcs11",
            "pkcs11_module": softhsm_token.module,
            "pkcs11_token_label": softhsm_token.label,
            "pkcs11_pin_file": softhsm_token.pin_file,
            "pin_max_failures": 2,
        }
    )
    # The secrets as `keys migrate` leaves them: imported from the master key the tests'
    # own fixtures derive theirs from.
    store = Pkcs11KeyStore.from_settings(on_token)
    try:
        provision_token_secrets(
            store, DerivedKeys.from_master(master_key), configured_data_key_file(on_token)
        )
    finally:
        store.close()
    return on_token


@pytest.fixture
def store(runtime: Runtime) -> Pkcs11KeyStore:
    assert isinstance(runtime.key_store, Pkcs11KeyStore)
    return runtime.key_store


@pytest.fixture
async def client(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(runtime=runtime, background_workers=False)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://roamsign.test") as client:
        yield client


@pytest.fixture
def person(factory: Factory) -> Person:
    return factory.person()


@pytest.fixture
def api_keys(factory: Factory) -> Keys:
    return Keys(
        signer=factory.client("igfmas", "signer"),
        other_signer=factory.client("eperolehan", "signer"),
        portal=factory.client("portal", "portal"),
        jdn_admin=factory.client("jdn", "jdn_admin"),
        agency_admin=factory.client("sa-jdn", "agency_admin", "JDN"),
    )


class TokenSlot:
    """Takes the token away (its directory moved, as if the HSM were unplugged) and back."""

    def __init__(self, token: SoftHsmToken) -> None:
        self.tokens = token.directory / "tokens"
        self.hidden = token.directory / "tokens-away"
        self.is_away = False

    def remove(self) -> None:
        shutil.move(self.tokens, self.hidden)
        self.tokens.mkdir()
        self.is_away = True

    def restore(self) -> None:
        if self.is_away:
            self.tokens.rmdir()
            shutil.move(self.hidden, self.tokens)
            self.is_away = False


@pytest.fixture
def slot(softhsm_token: SoftHsmToken) -> Iterator[TokenSlot]:
    slot = TokenSlot(softhsm_token)
    yield slot
    slot.restore()


def _blob(runtime: Runtime, credential_id: str) -> bytes | None:
    with runtime.sessions() as session:
        return session.scalar(select(Credential.key_blob).where(Credential.id == credential_id))


def test_the_ca_keys_are_token_objects_and_sign_certificates_and_crls(
    factory: Factory, runtime: Runtime, store: Pkcs11KeyStore, clock: FrozenClock
) -> None:
    with runtime.sessions() as session:
        rows = {ca.name: ca for ca in session.scalars(select(CertificateAuthority))}
    ca_rows = {name: row for name, row in rows.items() if name in TOKEN_LABELS}
    assert {name: token_label(row.key_blob) for name, row in ca_rows.items()} == TOKEN_LABELS
    # The TSA's and the OCSP responder's keys kept beside them are wrapped blobs, not objects.
    services = {name: row.key_blob for name, row in rows.items() if name not in TOKEN_LABELS}
    assert set(services) == {"tsa", "ocsp"}
    assert all(blob.startswith(BLOB_MAGIC) for blob in services.values())
    root = x509.load_pem_x509_certificate(rows["root"].certificate_pem.encode())
    issuing = x509.load_pem_x509_certificate(rows["issuing"].certificate_pem.encode())
    issuing.verify_directly_issued_by(root)
    root.verify_directly_issued_by(root)
    assert store.token_public_key("roamsign-ca-issuing") == issuing.public_key()

    people = [factory.person() for _ in range(3)]
    objects = store.count_token_objects()
    with runtime.sessions() as session:
        pem = session.scalar(
            select(Credential.certificate_pem).where(Credential.id == people[0].credential_id)
        )
    assert pem is not None
    x509.load_pem_x509_certificate(pem.encode()).verify_directly_issued_by(issuing)
    factory.person()
    assert store.count_token_objects() == objects  # people's keys are blobs, not objects

    with runtime.sessions() as session:
        crl = x509.load_der_x509_crl(factory.ca(session).crl_der(clock.now()))
    assert crl.is_signature_valid(issuing.public_key())
    assert isinstance(issuing.public_key(), ec.EllipticCurvePublicKey)


async def test_revocation_drops_the_cached_key_at_once_and_wipes_the_blob(
    client: httpx.AsyncClient, api_keys: Keys, person: Person, runtime: Runtime
) -> None:
    store = runtime.key_store
    assert isinstance(store, Pkcs11KeyStore) and person.credential_id is not None
    signed = await sign(client, api_keys.signer, runtime, person.mykad, person.pin)
    assert signed.status_code == 201, signed.text
    assert store.cached(person.credential_id)

    revoked = await client.post(
        f"/v1/credentials/{person.credential_id}/revocation",
        json={"reason": "keyCompromise"},
        headers=bearer(api_keys.jdn_admin),
    )
    assert revoked.status_code == 200, revoked.text
    assert not store.cached(person.credential_id)
    assert _blob(runtime, person.credential_id) is None  # nothing left to unwrap
    again = await sign(client, api_keys.signer, runtime, person.mykad, person.pin, "PV-2")
    assert_problem(again, 409, "credential_not_active")


async def test_renewal_drops_the_old_key_once_the_new_pin_is_set(
    client: httpx.AsyncClient, api_keys: Keys, person: Person, runtime: Runtime
) -> None:
    store = runtime.key_store
    assert isinstance(store, Pkcs11KeyStore) and person.credential_id is not None
    old_id = person.credential_id
    assert (await sign(client, api_keys.signer, runtime, person.mykad, person.pin)).is_success
    renewed = await client.post(
        f"/v1/credentials/{old_id}/renewal", headers=bearer(api_keys.jdn_admin)
    )
    assert renewed.status_code == 201, renewed.text
    assert store.cached(old_id)  # the old credential signs until the new PIN is set
    assert person.email is not None
    token = mail(runtime, person.email, "pin_setup").token
    activated = await set_pin(
        client, api_keys.portal, renewed.json()["id"], new_pin=NEW_PIN, token=token
    )
    assert activated.status_code == 200, activated.text

    assert not store.cached(old_id)
    assert _blob(runtime, old_id) is None
    new = await sign(client, api_keys.signer, runtime, person.mykad, NEW_PIN, "PV-2")
    assert new.status_code == 201, new.text


async def test_a_pin_lock_drops_the_cached_key_at_once(
    client: httpx.AsyncClient, api_keys: Keys, person: Person, runtime: Runtime
) -> None:
    store = runtime.key_store
    assert isinstance(store, Pkcs11KeyStore) and person.credential_id is not None
    assert (await sign(client, api_keys.signer, runtime, person.mykad, person.pin)).is_success
    assert store.cached(person.credential_id)
    for document in ("PV-x", "PV-y"):  # pin_max_failures
        wrong = await sign(client, api_keys.signer, runtime, person.mykad, WRONG_PIN, document)
        assert_problem(wrong, 403, "authorization_failed")
    assert not store.cached(person.credential_id)
    locked = await sign(client, api_keys.signer, runtime, person.mykad, person.pin, "PV-3")
    assert_problem(locked, 423, "credential_locked")


async def test_a_token_outage_answers_503_writes_nothing_and_serving_resumes(
    client: httpx.AsyncClient,
    api_keys: Keys,
    person: Person,
    runtime: Runtime,
    slot: TokenSlot,
) -> None:
    created = await request_signature(client, api_keys.signer, person.mykad)
    request_id = created.json()["id"]
    otp = queued_otp(runtime.sessions, runtime.keys.outbox_seal, request_id)
    slot.remove()

    ready = await client.get("/readyz")
    assert_problem(ready, 503, "service_unavailable")
    refused = await client.post(
        f"/v1/signing-requests/{request_id}/signature",
        json={"otp": otp, "pin": person.pin},
        headers=bearer(api_keys.signer),
    )
    body = assert_problem(refused, 503, "service_unavailable")
    assert "token" not in body["detail"] and refused.headers["retry-after"] == "5"
    with runtime.sessions() as session:
        request = session.get(SigningRequest, request_id)
        assert request is not None
        assert (request.status, request.attempts) == ("pending", 0)  # the attempt rolled back

    slot.restore()
    assert (await client.get("/readyz")).status_code == 200
    signed = await client.post(
        f"/v1/signing-requests/{request_id}/signature",
        json={"otp": otp, "pin": person.pin},
        headers=bearer(api_keys.signer),
    )
    assert signed.status_code == 201, signed.text


async def test_a_token_outage_on_the_csc_api_answers_in_its_shape(
    client: httpx.AsyncClient,
    api_keys: Keys,
    person: Person,
    runtime: Runtime,
    slot: TokenSlot,
) -> None:
    csc = Csc(client, runtime, api_keys.signer)
    hash_b64 = digest_b64()
    sad = await csc.sad(person, hash_b64)
    slot.remove()
    refused = await csc.sign_hash(person, sad, hash_b64)
    assert refused.status_code == 503, refused.text
    assert refused.json()["error"] == "server_error"
    slot.restore()
    signed = await csc.sign_hash(person, sad, hash_b64)  # the SAD was not spent
    assert signed.status_code == 200, signed.text
