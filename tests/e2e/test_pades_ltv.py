"""PAdES B-LT/B-LTA through roamsign's CSC API with pyHanko: OCSP answers, CRLs and time-stamps
from a running roamsign, and pyHanko's AdES long-term validation at a later time: passing for
a certificate revoked after the signature and for one expired since, failing for one revoked
before its only time-stamp."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from io import BytesIO
from pathlib import Path
from typing import Any

import httpx
import pytest
from asn1crypto import crl as asn1_crl
from asn1crypto import ocsp as asn1_ocsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign import PdfTimeStamper
from pyhanko.sign.ades.report import AdESIndeterminate, AdESPassed
from pyhanko.sign.timestamps import HTTPTimeStamper
from pyhanko.sign.validation import ades
from pyhanko.sign.validation.dss import DocumentSecurityStore
from pyhanko.sign.validation.policy_decl import (
    PdfSignatureValidationSpec,
    RevinfoOnlineFetchingRule,
    RevocationInfoGatheringSpec,
    SignatureValidationSpec,
)
from pyhanko_certvalidator import ValidationContext
from pyhanko_certvalidator import policy_decl as certvalidator_policy
from pyhanko_certvalidator.context import CertValidationPolicySpec
from pyhanko_certvalidator.ltv.types import ValidationTimingInfo
from pyhanko_certvalidator.policy_decl import FreshnessReqType
from pyhanko_certvalidator.registry import SimpleTrustManager
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from app.clock import FrozenClock
from app.db import unit_of_work
from app.runtime import Runtime
from app.services.mail.sink import MailSink
from app.settings import Settings
from app.units import Services
from examples.sign_pdf import sign_pdf
from tests.e2e.test_csc import DOCUMENT_NAME, make_pdf, otp_reader
from tests.factories import FACTORY_CALLER, Factory, Person
from tests.harness import Server, free_port, launch, serve_environment
from tests.unit.ltv_pki import openssl

# The person's certificate is issued as if a day minus this long ago, valid for one day: it
# is valid when it signs and has expired a few minutes later, when pyHanko validates.
EXPIRES_IN = timedelta(minutes=3)


@dataclass
class Ltv:
    server: Server
    factory: Factory
    key: str
    root: asn1_x509.Certificate


@pytest.fixture
def ltv(
    e2e_settings: Settings,
    engine: Engine,
    sessions: sessionmaker[Session],
    sink: MailSink,
) -> Iterator[Ltv]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    settings = e2e_settings.model_copy(
        update={"public_base_url": base, "certificate_validity_days": 1}
    )
    issued_at = datetime.now(UTC) - timedelta(days=1) + EXPIRES_IN
    runtime = Runtime.build(settings, FrozenClock(issued_at))
    runtime.engine.dispose()
    runtime.engine, runtime.sessions = engine, sessions
    factory = Factory(runtime)
    factory.init_ca()
    key = factory.client("igfmas", "signer")
    assert settings.master_key_file is not None
    env = serve_environment(
        database_url=settings.database_url,
        key_file=Path(settings.master_key_file),
        var_dir=Path(settings.var_dir),
        smtp_port=settings.smtp_port,
        ROAMSIGN_PUBLIC_BASE_URL=base,
        ROAMSIGN_DELIVERY_POLL_SECONDS="0.2",
    )
    server = launch(
        [sys.executable, "-m", "app", "serve", "--port", str(port)],
        env=env,
        port=port,
        log_path=Path(settings.var_dir) / f"server-{port}.log",
        ready_path="/readyz",
    )
    try:
        root_der = httpx.get(f"{base}/v1/ca/root.cer", timeout=10).content
        yield Ltv(server, factory, key, asn1_x509.Certificate.load(root_der))
    finally:
        server.stop()


def revoke(factory: Factory, person: Person) -> None:
    with unit_of_work(factory.sessions) as session:
        Services(factory.runtime, session).credential_lifecycle.revoke(
            FACTORY_CALLER, person.credential_id or "", "keyCompromise", datetime.now(UTC)
        )


def fetching(ltv: Ltv) -> ValidationContext:
    # The CRLs and OCSP answers are fetched seconds after the signing time pyHanko uses.
    return ValidationContext(
        trust_roots=[ltv.root], allow_fetching=True, time_tolerance=timedelta(minutes=1)
    )


async def validate_later(ltv: Ltv, signed: bytes, later: datetime) -> object:
    """pyHanko's AdES LTA validation at `later`, from what the PDF carries alone."""
    policy = CertValidationPolicySpec(
        trust_manager=SimpleTrustManager.build([ltv.root]),
        revinfo_policy=certvalidator_policy.CertRevTrustPolicy(
            revocation_checking_policy=certvalidator_policy.REQUIRE_REVINFO,
            freshness_req_type=FreshnessReqType.MAX_DIFF_REVOCATION_VALIDATION,
        ),
    )
    spec = PdfSignatureValidationSpec(
        SignatureValidationSpec(
            cert_validation_policy=policy,
            revinfo_gathering_policy=RevocationInfoGatheringSpec(
                online_fetching_rule=RevinfoOnlineFetchingRule.LOCAL_ONLY
            ),
        )
    )
    [embedded] = [
        sig for sig in PdfFileReader(BytesIO(signed)).embedded_signatures if sig.field_name
    ][:1]
    result = await ades.ades_lta_validation(
        embedded,
        pdf_validation_spec=spec,
        timing_info=ValidationTimingInfo(later, later, point_in_time_validation=True),
    )
    return result.ades_subindic


async def test_pades_lta_outlives_revocation_and_expiry_but_not_an_early_revocation(
    ltv: Ltv, sink: MailSink, tmp_path: Path
) -> None:
    pdf = make_pdf("Baucar Bayaran PV-2026-000123: RM 12,500.00")
    tsa = HTTPTimeStamper(f"{ltv.server.url}/v1/tsa")

    muthu = ltv.factory.person(email="muthu@mof.gov.my")
    long_term = await sign_lta(ltv, muthu, sink, pdf, tsa)
    leaf = PdfFileReader(BytesIO(long_term)).embedded_signatures[0].signer_cert
    assert ": good" in openssl_ocsp(ltv, leaf, tmp_path)
    revoke(ltv.factory, muthu)  # revoked after the signature and its time-stamps
    assert ": revoked" in openssl_ocsp(ltv, leaf, tmp_path)
    assert await validate_later(ltv, long_term, datetime.now(UTC)) == AdESPassed.OK
    later = datetime.now(UTC) + EXPIRES_IN + timedelta(minutes=2)  # and expired by then
    assert await validate_later(ltv, long_term, later) == AdESPassed.OK

    # Aisyah's signature gets its only time-stamp once her certificate has been revoked (the
    # stamper revokes it first): nothing proves the signature existed before the revocation.
    aisyah = ltv.factory.person(email="aisyah@jdn.gov.my")
    late = RevokingFirst(f"{ltv.server.url}/v1/tsa", lambda: revoke(ltv.factory, aisyah))
    stamped_late = await sign_lta(ltv, aisyah, sink, pdf, late, long_term=False)
    # pyHanko will not gather validation data for a revoked certificate: roamsign's answers
    # (the OCSP "revoked", the CRLs) go into the DSS by hand, then a document time-stamp.
    embedded = PdfFileReader(BytesIO(stamped_late)).embedded_signatures[0]
    writer = IncrementalPdfFileWriter(BytesIO(stamped_late))
    DocumentSecurityStore.supply_dss_in_writer(
        writer, embedded.pkcs7_content, **revocation_data(ltv, embedded.signer_cert)
    )
    archived = await PdfTimeStamper(tsa).async_timestamp_pdf(
        writer, "sha256", validation_context=fetching(ltv)
    )
    # Validated while her certificate is still within its validity: the revocation fails it.
    # (The same steps without the revocation pass.)
    verdict = await validate_later(ltv, archived.getvalue(), datetime.now(UTC))
    assert verdict == AdESIndeterminate.REVOKED_NO_POE


def openssl_ocsp(ltv: Ltv, leaf: asn1_x509.Certificate, tmp_path: Path) -> str:
    """`openssl ocsp -url` against the server, as a relying party asks (nonce included)."""
    base = ltv.server.url
    ders = {
        "leaf": leaf.dump(),
        "issuing": httpx.get(f"{base}/v1/ca/issuer.cer").content,
        "root": ltv.root.dump(),
    }
    pem = {name: tmp_path / f"{name}.pem" for name in ders}
    for name, der in ders.items():
        certificate = x509.load_der_x509_certificate(der)
        pem[name].write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    done = openssl(
        "ocsp",
        "-issuer",
        pem["issuing"],
        "-cert",
        pem["leaf"],
        "-CAfile",
        pem["root"],
        "-url",
        f"{base}/v1/ca/ocsp",
    )
    assert "Response verify OK" in done.stderr + done.stdout, done.stderr
    return done.stdout


def revocation_data(ltv: Ltv, leaf: asn1_x509.Certificate) -> dict[str, list[Any]]:
    """What roamsign says now of the leaf and the TSA (OCSP) and of the issuing CA (CRLs)."""
    base = ltv.server.url
    issuing = x509.load_der_x509_certificate(httpx.get(f"{base}/v1/ca/issuer.cer").content)
    with ltv.factory.sessions() as session:
        tsa = Services(ltv.factory.runtime, session).tsa
        tsa_cert = tsa.cache.get(session).tsa
    ocsps = []
    for certificate in (x509.load_der_x509_certificate(leaf.dump()), tsa_cert):
        request = (
            ocsp.OCSPRequestBuilder()
            .add_certificate(certificate, issuing, hashes.SHA256())
            .build()
            .public_bytes(serialization.Encoding.DER)
        )
        answer = httpx.post(
            f"{base}/v1/ca/ocsp",
            content=request,
            headers={"Content-Type": "application/ocsp-request"},
        )
        ocsps.append(asn1_ocsp.OCSPResponse.load(answer.content))
    crls = [
        asn1_crl.CertificateList.load(httpx.get(f"{base}{path}").content)
        for path in ("/v1/ca/crl", "/v1/ca/root.crl")
    ]
    certs = [
        asn1_x509.Certificate.load(c.public_bytes(serialization.Encoding.DER))
        for c in (issuing, tsa_cert)
    ]
    return {"certs": [leaf, *certs], "ocsps": ocsps, "crls": crls}


class RevokingFirst(HTTPTimeStamper):
    """roamsign's TSA, reached only after `before()` (the certificate's revocation)."""

    def __init__(self, url: str, before: Callable[[], None]) -> None:
        super().__init__(url)
        self.before: Callable[[], None] | None = before

    async def async_dummy_response(self, md_algorithm: str) -> Any:
        # pyHanko sizes the signature with a token made before signing: no revocation yet.
        before, self.before = self.before, None
        try:
            return await super().async_dummy_response(md_algorithm)
        finally:
            self.before = before

    async def async_timestamp(self, message_digest: bytes, md_algorithm: str) -> Any:
        if self.before is not None:
            self.before()
            self.before = None
        return await super().async_timestamp(message_digest, md_algorithm)


async def sign_lta(
    ltv: Ltv,
    person: Person,
    sink: MailSink,
    pdf: bytes,
    tsa: HTTPTimeStamper,
    *,
    long_term: bool = True,
) -> bytes:
    async def read_pin() -> str:
        return person.pin

    assert person.email is not None
    return await sign_pdf(
        pdf,
        service_url=ltv.server.url,
        api_key=ltv.key,
        document_name=DOCUMENT_NAME,
        read_otp=otp_reader(sink, person.email),
        read_pin=read_pin,
        mykad=person.mykad,
        timestamper=tsa,
        validation_context=fetching(ltv) if long_term else None,
    )
