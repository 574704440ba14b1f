"""`ca init` and `ca upgrade`: the CA, its TSA and OCSP responder, keys in the key store."""

from __future__ import annotations

from cryptography import x509
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID
from sqlalchemy import select

from app.clock import FrozenClock
from app.db import unit_of_work
from app.models import CertificateAuthority
from app.runtime import Runtime
from app.units import Services

BASE = "http://127.0.0.1:8000"


def rows(runtime: Runtime) -> dict[str, x509.Certificate]:
    with runtime.sessions() as session:
        return {
            row.name: x509.load_pem_x509_certificate(row.certificate_pem.encode())
            for row in session.scalars(select(CertificateAuthority))
        }


def provision(runtime: Runtime, step: str) -> list[str]:
    with unit_of_work(runtime.sessions) as session:
        provisioning = Services(runtime, session).provisioning
        made: list[str] = getattr(provisioning, step)(runtime.clock.now())
        return made


def test_init_makes_the_tsa_and_the_responder_and_points_the_issuing_ca_at_the_root(
    runtime: Runtime,
) -> None:
    assert provision(runtime, "init") == [
        "root and issuing CA",
        "issuing CA certificate with its revocation pointers",
        "time-stamping authority",
        "OCSP responder certificate",
    ]
    assert provision(runtime, "init") == []  # idempotent
    certificates = rows(runtime)
    root, issuing = certificates["root"], certificates["issuing"]
    tsa, responder = certificates["tsa"], certificates["ocsp"]
    issuing.verify_directly_issued_by(root)
    points = issuing.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    assert [n.value for p in points for n in p.full_name or []] == [f"{BASE}/v1/ca/root.crl"]
    access = issuing.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    assert [(d.access_method, d.access_location.value) for d in access] == [
        (AuthorityInformationAccessOID.CA_ISSUERS, f"{BASE}/v1/ca/root.cer")
    ]
    for certificate in (tsa, responder):
        certificate.verify_directly_issued_by(issuing)
    usage = tsa.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    assert usage.critical and list(usage.value) == [ExtendedKeyUsageOID.TIME_STAMPING]
    usage = responder.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    assert list(usage.value) == [ExtendedKeyUsageOID.OCSP_SIGNING]
    responder.extensions.get_extension_for_class(x509.OCSPNoCheck)


def test_upgrade_brings_an_older_ca_up_to_date(runtime: Runtime, clock: FrozenClock) -> None:
    with unit_of_work(runtime.sessions) as session:
        Services(runtime, session).ca.init(clock.now())  # as `ca init` made it before issue 17
    old = rows(runtime)["issuing"]
    with unit_of_work(runtime.sessions) as session:
        person = Services(runtime, session).ca.issue(
            old.public_key(),  # type: ignore[arg-type]
            "Nur Aisyah",
            "RS-1",
            clock.now(),
            365,
        )
    assert provision(runtime, "upgrade") == [
        "issuing CA certificate with its revocation pointers",
        "time-stamping authority",
        "OCSP responder certificate",
    ]
    assert provision(runtime, "upgrade") == []
    new = rows(runtime)["issuing"]
    assert new.serial_number != old.serial_number
    assert (new.subject, new.public_key(), new.not_valid_after_utc) == (
        old.subject,
        old.public_key(),
        old.not_valid_after_utc,
    )
    person.verify_directly_issued_by(new)  # what the old certificate issued still chains

    clock.advance(days=61)  # the responder's 90 days have less than 30 left
    first = rows(runtime)["ocsp"]
    assert provision(runtime, "upgrade") == ["OCSP responder certificate"]
    assert rows(runtime)["ocsp"].not_valid_after_utc > first.not_valid_after_utc
