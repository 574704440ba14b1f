"""E-mail over TLS: implicit (ROAMSIGN_SMTP_TLS, SMTPS: TLS from the first byte) or STARTTLS
(ROAMSIGN_SMTP_STARTTLS), the relay's certificate verified against its host name."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import socket
import ssl
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from app.services.mail.transport import SmtpTransport, TransientDeliveryError
from tests.integration.mail.helpers import smtp_settings

MESSAGE = b"From: a@roamsign.local\r\nTo: b@jdn.gov.my\r\nSubject: t\r\n\r\nhello\r\n"


class _TlsController(Controller):
    def _create_server(self) -> Awaitable[asyncio.AbstractServer]:
        return self._bind()

    async def _bind(self) -> asyncio.AbstractServer:
        server = await self.loop.create_server(
            self._factory_invoker, host=self.hostname, port=0, ssl=self.ssl_context
        )
        self.port = server.sockets[0].getsockname()[1]
        return server

    def _trigger_server(self) -> None:
        # aiosmtpd's own check opens TLS with the server's context; this one is a client's.
        client = ssl.create_default_context()
        client.check_hostname, client.verify_mode = False, ssl.CERT_NONE
        with (
            socket.create_connection((self.hostname, self.port), 1.0) as sock,
            client.wrap_socket(sock) as tls,
        ):
            tls.recv(1024)


class _Received:
    def __init__(self) -> None:
        self.messages: list[bytes] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(envelope.content)
        return "250 OK"


def _self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "relay.pem", directory / "relay.key"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


class _PlainController(Controller):
    def _create_server(self) -> Awaitable[asyncio.AbstractServer]:
        return self._bind()

    async def _bind(self) -> asyncio.AbstractServer:
        server = await self.loop.create_server(self._factory_invoker, host=self.hostname, port=0)
        self.port = server.sockets[0].getsockname()[1]
        return server


@pytest.fixture(params=["smtp_tls", "smtp_starttls"])
def relay(
    tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[tuple[int, Path, str, _Received]]:
    cert_file, key_file = _self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    received = _Received()
    controller: Controller
    if request.param == "smtp_tls":
        controller = _TlsController(received, hostname="127.0.0.1", port=0, ssl_context=context)
    else:
        controller = _PlainController(
            received, hostname="127.0.0.1", port=0, tls_context=context, require_starttls=True
        )
    controller.start()
    yield int(controller.port), cert_file, request.param, received
    controller.stop()


def test_tls_delivers_to_a_relay_it_trusts(
    relay: tuple[int, Path, str, _Received], monkeypatch: pytest.MonkeyPatch
) -> None:
    port, cert_file, mode, received = relay
    monkeypatch.setenv("SSL_CERT_FILE", str(cert_file))  # the relay's CA, for this test
    transport = SmtpTransport(smtp_settings(port, **{mode: True}))
    try:
        transport.send(MESSAGE, "a@roamsign.local", ["b@jdn.gov.my"])
    finally:
        transport.close()
    assert len(received.messages) == 1 and b"hello" in received.messages[0]


def test_tls_refuses_a_relay_it_does_not_trust(relay: tuple[int, Path, str, _Received]) -> None:
    port, _cert_file, mode, received = relay
    transport = SmtpTransport(smtp_settings(port, **{mode: True}))
    with pytest.raises(TransientDeliveryError, match="CERTIFICATE_VERIFY_FAILED"):
        transport.send(MESSAGE, "a@roamsign.local", ["b@jdn.gov.my"])
    assert received.messages == []
