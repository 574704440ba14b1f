"""The secrets in the token: HMAC keys and the AES-GCM sealing key, imported or generated."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path
from typing import Any

import PyKCS11
import pytest

from app.crypto.custody import build_secrets
from app.crypto.keys import MAC_PURPOSES, DerivedKeys, software_secrets
from app.crypto.keystore import SoftwareKeyStore
from app.crypto.pkcs11 import Pkcs11KeyStore, TokenKeyExists, TokenUnavailable
from app.crypto.pkcs11_secrets import (
    MAC_LABELS,
    SEAL_LABEL,
    TokenSecretsMissing,
    provision_token_secrets,
    token_secrets,
)
from app.crypto.sealing import SealBroken
from app.crypto.secrets import pin_mac
from app.settings import Settings
from tests.hsm.conftest import USER_PIN, SoftHsmToken
from tests.unit.test_keys import MASTER, SEALED_BEFORE

SOFTWARE = DerivedKeys.from_master(MASTER)
ALL_LABELS = (*MAC_LABELS.values(), SEAL_LABEL)


def test_imported_keys_mac_as_the_software_values_do(key_store: Pkcs11KeyStore) -> None:
    provisioned = provision_token_secrets(key_store, SOFTWARE)
    assert {step.label: step.outcome for step in provisioned} == dict.fromkeys(
        ALL_LABELS, "imported"
    )
    token, software = token_secrets(key_store), software_secrets(SOFTWARE)
    for name in MAC_PURPOSES:
        data = f"{name}|person-1|123456".encode()
        expected = hmac.new(getattr(SOFTWARE, name), data, hashlib.sha256).digest()
        assert getattr(token, name).mac(data) == expected == getattr(software, name).mac(data)
    # The vector pinned with the code as it was: a PIN set before the move still verifies.
    assert pin_mac(token.pin_pepper, "cred-1", "730519").hex() == (
        "2c4f4818b2f73d20927e8936d1d237be6dc96236f56acb0df435cdc32269d2e0"
    )


def test_the_imported_seal_key_opens_what_software_sealed_and_back(
    key_store: Pkcs11KeyStore,
) -> None:
    provision_token_secrets(key_store, SOFTWARE)
    token, software = token_secrets(key_store), software_secrets(SOFTWARE)
    assert token.outbox_seal.open(SEALED_BEFORE, b"msg-1") == b"hello outbox"
    sealed = token.outbox_seal.seal(b"OTP 123456", b"outbox:m-1")
    assert len(sealed) == 12 + 10 + 16
    assert software.outbox_seal.open(sealed, b"outbox:m-1") == b"OTP 123456"
    assert token.outbox_seal.open(sealed, b"outbox:m-1") == b"OTP 123456"


def test_provisioning_is_idempotent_and_refuses_another_value(key_store: Pkcs11KeyStore) -> None:
    provision_token_secrets(key_store, SOFTWARE)
    again = provision_token_secrets(key_store, SOFTWARE)
    assert {step.outcome for step in again} == {"present"}
    assert {step.outcome for step in provision_token_secrets(key_store, None)} == {"present"}
    with pytest.raises(TokenKeyExists):
        provision_token_secrets(key_store, DerivedKeys.from_master(bytes(32)))
    assert (
        token_secrets(key_store).pin_pepper.mac(b"x")
        == hmac.new(SOFTWARE.pin_pepper, b"x", hashlib.sha256).digest()
    )


def test_a_new_deployment_generates_its_keys_in_the_token(key_store: Pkcs11KeyStore) -> None:
    provisioned = provision_token_secrets(key_store, None)
    assert {step.outcome for step in provisioned} == {"generated"}
    token, software = token_secrets(key_store), software_secrets(SOFTWARE)
    assert token.otp_mac.mac(b"x") != software.otp_mac.mac(b"x")
    assert len({getattr(token, name).mac(b"x") for name in MAC_PURPOSES}) == 7
    sealed = token.outbox_seal.seal(b"payload", b"id-1")
    assert token.outbox_seal.open(sealed, b"id-1") == b"payload"
    with pytest.raises(SealBroken):
        software.outbox_seal.open(sealed, b"id-1")


def test_a_tampered_or_misdirected_seal_is_refused_and_the_token_keeps_serving(
    key_store: Pkcs11KeyStore,
) -> None:
    provision_token_secrets(key_store, None)
    seal_key = token_secrets(key_store).outbox_seal
    sealed = seal_key.seal(b"OTP 123456", b"outbox:m-1")
    for blob, associated_data in (
        (sealed[:-1] + bytes([sealed[-1] ^ 1]), b"outbox:m-1"),
        (sealed[:12] + bytes([sealed[12] ^ 1]) + sealed[13:], b"outbox:m-1"),
        (sealed, b"outbox:m-2"),
        (sealed[:28], b"outbox:m-1"),
        (sealed[:12], b"outbox:m-1"),
    ):
        with pytest.raises(SealBroken):
            seal_key.open(blob, associated_data)
    # SoftHSM2 says CKR_GENERAL_ERROR for a wrong tag: it must not read as the token gone.
    assert seal_key.open(sealed, b"outbox:m-1") == b"OTP 123456"
    assert key_store.mac(MAC_LABELS["otp_mac"], b"still serving")


def test_a_token_gone_is_unavailable_not_a_broken_seal(
    softhsm_token: SoftHsmToken, key_store: Pkcs11KeyStore
) -> None:
    provision_token_secrets(key_store, None)
    seal_key = token_secrets(key_store).outbox_seal
    sealed = seal_key.seal(b"OTP 123456", b"outbox:m-1")
    # Another part of the process finalises the library: every session dies at once.
    other = PyKCS11.PyKCS11Lib()
    other.load(softhsm_token.module)
    other.lib.C_Finalize()
    with pytest.raises(TokenUnavailable):
        seal_key.open(sealed[:-1] + bytes([sealed[-1] ^ 1]), b"outbox:m-1")
    assert seal_key.open(sealed, b"outbox:m-1") == b"OTP 123456"


def test_the_secrets_refuse_to_start_on_an_unprovisioned_token(key_store: Pkcs11KeyStore) -> None:
    key_store.secret_key(MAC_LABELS["otp_mac"])
    with pytest.raises(TokenSecretsMissing) as refused:
        token_secrets(key_store)
    message = str(refused.value)
    assert MAC_LABELS["pin_pepper"] in message and SEAL_LABEL in message
    assert MAC_LABELS["otp_mac"] not in message
    assert "\n" not in message


def test_build_secrets_follows_the_key_store(
    softhsm_token: SoftHsmToken, key_store: Pkcs11KeyStore, tmp_path: Path
) -> None:
    provision_token_secrets(key_store, None)
    settings = softhsm_token.settings(master_key_file=tmp_path / "absent.key")
    built = build_secrets(settings, key_store)
    assert repr(built.pin_pepper) == f"TokenMacKey({MAC_LABELS['pin_pepper']!r})"
    assert not (tmp_path / "absent.key").exists()  # the master key is not even read
    software = build_secrets(
        Settings(profile="demo", var_dir=tmp_path), SoftwareKeyStore(SOFTWARE.key_store)
    )
    assert repr(software.pin_pepper) == "SoftwareMacKey(<redacted>)"


def _attributes(token: SoftHsmToken, label: str, attributes: list[int]) -> list[Any]:
    """Read attributes as anyone holding the token PIN could, through a session of their own."""
    lib = PyKCS11.PyKCS11Lib()
    lib.load(token.module)
    slot = next(
        s for s in lib.getSlotList(tokenPresent=True) if lib.getTokenInfo(s).label.strip() == label
    )
    session = lib.openSession(slot, PyKCS11.CKF_SERIAL_SESSION | PyKCS11.CKF_RW_SESSION)
    try:
        session.login(USER_PIN)
    except PyKCS11.PyKCS11Error as error:
        if error.value != PyKCS11.CKR_USER_ALREADY_LOGGED_IN:
            raise
    found = {}
    for key_label in ALL_LABELS:
        [handle] = session.findObjects([(PyKCS11.CKA_LABEL, key_label)])
        values = []
        for attribute in attributes:
            try:
                values.append(session.getAttributeValue(handle, [attribute], allAsBinary=True)[0])
            except PyKCS11.PyKCS11Error as error:
                values.append(error)
        found[key_label] = values
    session.closeSession()
    return [found[key_label] for key_label in ALL_LABELS]


@pytest.mark.parametrize("imported", [False, True])
def test_no_secret_key_can_be_read_out_even_with_the_token_pin(
    softhsm_token: SoftHsmToken, key_store: Pkcs11KeyStore, imported: bool
) -> None:
    provision_token_secrets(key_store, SOFTWARE if imported else None)
    rows = _attributes(
        softhsm_token,
        softhsm_token.label,
        [
            PyKCS11.CKA_VALUE,
            PyKCS11.CKA_SENSITIVE,
            PyKCS11.CKA_EXTRACTABLE,
            PyKCS11.CKA_NEVER_EXTRACTABLE,
        ],
    )
    for value, sensitive, extractable, never_extractable in rows:
        # PyKCS11 gives None for an attribute the token refuses (CKR_ATTRIBUTE_SENSITIVE).
        assert value is None or isinstance(value, PyKCS11.PyKCS11Error)
        assert list(sensitive) == [1] and list(extractable) == [0]
        # Generated in the token: never extractable, ever. Imported: it was outside once.
        assert list(never_extractable) == ([0] if imported else [1])
