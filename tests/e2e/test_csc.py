"""pyHanko's CSC signer against a running server: real PDFs, OTPs through SMTP, then validation
by pyHanko against our CA and by `openssl cms -verify`."""

from __future__ import annotations

import asyncio
import base64
from io import BytesIO
from pathlib import Path

import httpx
import pytest
from asn1crypto import cms
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.generic import pdf_name
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.pdf_utils.writer import PdfFileWriter
from pyhanko.sign.diff_analysis import ModificationLevel
from pyhanko.sign.general import SigningError
from pyhanko.sign.validation import async_validate_pdf_signature
from pyhanko.sign.validation.status import SignatureCoverageLevel
from pyhanko_certvalidator import ValidationContext

from app.services.mail.sink import MailSink
from examples.sign_pdf import sign_pdf
from tests.e2e.conftest import Server, ServerStarter
from tests.factories import Factory, Person
from tests.helpers import openssl_verify, otp_from_message

DOCUMENT_NAME = "Baucar Bayaran PV-2026-000123"


def make_pdf(text: str) -> bytes:
    """A one-page PDF (Helvetica text), made with pyHanko's writer."""
    writer = PdfFileWriter()
    font = writer.add_object(
        generic.DictionaryObject(
            {
                pdf_name("/Type"): pdf_name("/Font"),
                pdf_name("/Subtype"): pdf_name("/Type1"),
                pdf_name("/BaseFont"): pdf_name("/Helvetica"),
            }
        )
    )
    content = writer.add_object(
        generic.StreamObject(stream_data=f"BT /F1 14 Tf 72 760 Td ({text}) Tj ET".encode())
    )
    page = generic.DictionaryObject(
        {
            pdf_name("/Type"): pdf_name("/Page"),
            pdf_name("/MediaBox"): generic.ArrayObject(
                [generic.NumberObject(n) for n in (0, 0, 595, 842)]
            ),
            pdf_name("/Resources"): generic.DictionaryObject(
                {pdf_name("/Font"): generic.DictionaryObject({pdf_name("/F1"): font})}
            ),
            pdf_name("/Contents"): content,
        }
    )
    writer.insert_page(page)
    out = BytesIO()
    writer.write(out)
    return out.getvalue()


def otp_reader(sink: MailSink, email: str):  # type: ignore[no-untyped-def]
    """What the person does: open the newest e-mail for this hash and read the OTP."""

    async def read_otp(hash_b64: str) -> str:
        digest = base64.b64decode(hash_b64).hex().upper()
        fingerprint = f"{digest[:8]}...{digest[-8:]}"

        def for_this_hash(message: object) -> bool:
            body = message.get_body(preferencelist=("plain",))  # type: ignore[attr-defined]
            return message["To"] == email and fingerprint in body.get_content()  # type: ignore[index]

        message = await asyncio.to_thread(sink.wait_for, for_this_hash, 15)
        return otp_from_message(message)

    return read_otp


async def sign(
    server: Server,
    key: str,
    person: Person,
    sink: MailSink,
    pdf: bytes,
    *,
    pin: str | None = None,
    api_ver: str = "v1",
    prefer_pss: bool = False,
    field_name: str = "Signature1",
) -> bytes:
    async def read_pin() -> str:
        return pin or person.pin

    assert person.email is not None
    return await sign_pdf(
        pdf,
        service_url=server.url,
        api_key=key,
        document_name=DOCUMENT_NAME,
        read_otp=otp_reader(sink, person.email),
        read_pin=read_pin,
        mykad=person.mykad,
        api_ver=api_ver,
        prefer_pss=prefer_pss,
        field_name=field_name,
    )


def ca_chain(server: Server) -> list[x509.Certificate]:
    pem = httpx.get(f"{server.url}/v1/ca/certificates", timeout=10).text
    return x509.load_pem_x509_certificates(pem.encode())  # issuing CA, then root


async def assert_valid_pdf(signed: bytes, root: x509.Certificate, tmp_path: Path) -> list[str]:
    """pyHanko: intact, trusted to our root, the whole file covered and untouched; then the
    CMS alone with openssl, over the bytes the signature covers. Answers the mechanisms."""
    trust_root = asn1_x509.Certificate.load(root.public_bytes(serialization.Encoding.DER))
    (tmp_path / "root.pem").write_bytes(root.public_bytes(serialization.Encoding.PEM))
    reader = PdfFileReader(BytesIO(signed))
    mechanisms = []
    for embedded in reader.embedded_signatures:
        context = ValidationContext(trust_roots=[trust_root], allow_fetching=False)
        status = await async_validate_pdf_signature(embedded, context)
        assert status.intact, status.pretty_print_details()
        assert status.valid, status.pretty_print_details()
        assert status.trusted, status.pretty_print_details()
        assert status.bottom_line, status.pretty_print_details()
        if embedded is reader.embedded_signatures[-1]:
            assert status.coverage == SignatureCoverageLevel.ENTIRE_FILE
            assert status.modification_level == ModificationLevel.NONE
        mechanisms.append(embedded.signer_info["signature_algorithm"]["algorithm"].native)

        start, first, second, length = embedded.byte_range
        covered = signed[start : start + first] + signed[second : second + length]
        (tmp_path / "covered.bin").write_bytes(covered)
        # /Contents is zero-padded after the DER ContentInfo: keep the DER only.
        content_info = cms.ContentInfo.load(embedded.pkcs7_content)
        (tmp_path / "signature.der").write_bytes(content_info.dump())
        verified = openssl_verify(
            tmp_path / "signature.der", tmp_path / "covered.bin", tmp_path / "root.pem"
        )
        assert verified.returncode == 0, verified.stderr
        (tmp_path / "covered.bin").write_bytes(covered.replace(b"12,500", b"92,500"))
        altered = openssl_verify(
            tmp_path / "signature.der", tmp_path / "covered.bin", tmp_path / "root.pem"
        )
        assert altered.returncode != 0
    return mechanisms


@pytest.mark.parametrize(
    ("key_algorithm", "prefer_pss", "api_ver", "mechanism"),
    [
        ("ecdsa-p256", False, "v1", "sha256_ecdsa"),
        ("rsa-2048", False, "v2", "sha256_rsa"),
        ("rsa-2048", True, "v1", "rsassa_pss"),
    ],
)
async def test_pyhanko_signs_a_pdf_through_the_csc_api(
    start_server: ServerStarter,
    e2e_factory: Factory,
    sink: MailSink,
    tmp_path: Path,
    key_algorithm: str,
    prefer_pss: bool,
    api_ver: str,
    mechanism: str,
) -> None:
    person = e2e_factory.person(key_algorithm=key_algorithm, email="muthu@mof.gov.my")
    key = e2e_factory.client("igfmas", "signer")
    server = start_server()
    pdf = make_pdf("Baucar Bayaran PV-2026-000123: RM 12,500.00")

    signed = await sign(server, key, person, sink, pdf, api_ver=api_ver, prefer_pss=prefer_pss)
    # A second signature on the same PDF: a new hash, a new OTP, a new SAD.
    twice = await sign(
        server, key, person, sink, signed, api_ver=api_ver, prefer_pss=prefer_pss, field_name="Sig2"
    )

    root = ca_chain(server)[-1]
    assert await assert_valid_pdf(twice, root, tmp_path) == [mechanism, mechanism]
    otp_messages = [m for m in sink.messages if m["X-Roamsign-Request-Id"]]
    assert len(otp_messages) == 2
    # ...and after each signature, the notice that names the document.
    notices = [m for m in sink.messages if "Document signed" in str(m["Subject"])]
    assert len(notices) >= 1
    message = otp_messages[0]
    assert message["X-Roamsign-Request-Id"]
    assert DOCUMENT_NAME in message.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
    log = server.log()
    assert person.pin not in log and person.mykad not in log


async def test_a_wrong_pin_signs_nothing(
    start_server: ServerStarter, e2e_factory: Factory, sink: MailSink
) -> None:
    person = e2e_factory.person()
    key = e2e_factory.client("igfmas", "signer")
    server = start_server()
    with pytest.raises(SigningError):
        await sign(server, key, person, sink, make_pdf("PV-2"), pin="902847")
