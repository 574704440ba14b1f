"""The secrets of a pkcs11 deployment: HMAC keys in the token, imported or generated, and the
outbox's AES-256 data key, stored only wrapped under the token's KEK and used in process."""

from __future__ import annotations

import hashlib
import hmac
from base64 import b64encode
from pathlib import Path
from typing import Any

import PyKCS11
import pytest

from app.crypto.custody import build_secrets
from app.crypto.keys import MAC_PURPOSES, CachedMacKey, DerivedKeys, software_secrets
from app.crypto.keystore import SoftwareKeyStore
from app.crypto.pkcs11 import (
    KeyBlobRejected,
    Pkcs11KeyStore,
    TokenKeyExists,
    TokenKeyMissing,
    TokenUnavailable,
)
from app.crypto.pkcs11_secrets import (
    MAC_LABELS,
    SEAL_LABEL,
    DataSealKey,
    TokenSealKey,
    TokenSecretsMissing,
    data_key_file,
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


@pytest.fixture
def data_key(tmp_path: Path) -> Path:
    return data_key_file(tmp_path / "var")


def test_imported_keys_mac_as_the_software_values_do(
    key_store: Pkcs11KeyStore, data_key: Path
) -> None:
    provisioned = provision_token_secrets(key_store, SOFTWARE, data_key)
    assert {step.label: step.outcome for step in provisioned} == dict.fromkeys(
        ALL_LABELS, "imported"
    )
    token, software = token_secrets(key_store, data_key), software_secrets(SOFTWARE)
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
    data_key: Path,
) -> None:
    provision_token_secrets(key_store, SOFTWARE, data_key)
    token, software = token_secrets(key_store, data_key), software_secrets(SOFTWARE)
    assert token.outbox_seal.open(SEALED_BEFORE, b"msg-1") == b"hello outbox"
    sealed = token.outbox_seal.seal(b"OTP 123456", b"outbox:m-1")
    assert len(sealed) == 12 + 10 + 16
    assert software.outbox_seal.open(sealed, b"outbox:m-1") == b"OTP 123456"
    assert token.outbox_seal.open(sealed, b"outbox:m-1") == b"OTP 123456"


def test_provisioning_is_idempotent_and_refuses_another_value(
    key_store: Pkcs11KeyStore, data_key: Path
) -> None:
    provision_token_secrets(key_store, SOFTWARE, data_key)
    again = provision_token_secrets(key_store, SOFTWARE, data_key)
    assert {step.outcome for step in again} == {"present"}
    assert {step.outcome for step in provision_token_secrets(key_store, None, data_key)} == {
        "present"
    }
    with pytest.raises(TokenKeyExists):
        provision_token_secrets(key_store, DerivedKeys.from_master(bytes(32)), data_key)
    assert (
        token_secrets(key_store, data_key).pin_pepper.mac(b"x")
        == hmac.new(SOFTWARE.pin_pepper, b"x", hashlib.sha256).digest()
    )


def test_a_new_deployment_generates_its_keys_in_the_token(
    key_store: Pkcs11KeyStore, data_key: Path
) -> None:
    provisioned = provision_token_secrets(key_store, None, data_key)
    assert {step.outcome for step in provisioned} == {"generated"}
    token, software = token_secrets(key_store, data_key), software_secrets(SOFTWARE)
    assert token.otp_mac.mac(b"x") != software.otp_mac.mac(b"x")
    assert len({getattr(token, name).mac(b"x") for name in MAC_PURPOSES}) == 7
    sealed = token.outbox_seal.seal(b"payload", b"id-1")
    assert token.outbox_seal.open(sealed, b"id-1") == b"payload"
    with pytest.raises(SealBroken):
        software.outbox_seal.open(sealed, b"id-1")


def test_a_tampered_or_misdirected_seal_is_refused_and_the_token_keeps_serving(
    key_store: Pkcs11KeyStore,
    data_key: Path,
) -> None:
    provision_token_secrets(key_store, None, data_key)
    seal_key = token_secrets(key_store, data_key).outbox_seal
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
    assert seal_key.open(sealed, b"outbox:m-1") == b"OTP 123456"
    assert key_store.mac(MAC_LABELS["otp_mac"], b"still serving")


def test_a_token_gone_is_unavailable_not_a_broken_seal(
    softhsm_token: SoftHsmToken, key_store: Pkcs11KeyStore
) -> None:
    # Stage 2a's sealing inside the token, which the data key's legacy opener still uses.
    key_store.aes_key(SEAL_LABEL)
    seal_key = TokenSealKey(key_store, SEAL_LABEL)
    sealed = seal_key.seal(b"OTP 123456", b"outbox:m-1")
    _finalize(softhsm_token)
    with pytest.raises(TokenUnavailable):
        seal_key.open(sealed[:-1] + bytes([sealed[-1] ^ 1]), b"outbox:m-1")
    assert seal_key.open(sealed, b"outbox:m-1") == b"OTP 123456"


def test_the_data_key_seals_without_the_token_and_macs_come_back_with_it(
    softhsm_token: SoftHsmToken, key_store: Pkcs11KeyStore, data_key: Path
) -> None:
    provision_token_secrets(key_store, None, data_key)
    secrets = token_secrets(key_store, data_key)
    _finalize(softhsm_token)
    # The data key was unwrapped once, at start-up: sealing no longer asks the token.
    sealed = secrets.outbox_seal.seal(b"OTP 123456", b"outbox:m-1")
    assert secrets.outbox_seal.open(sealed, b"outbox:m-1") == b"OTP 123456"
    with pytest.raises(TokenUnavailable):
        secrets.pin_pepper.mac(b"credential|123456")
    assert secrets.pin_pepper.mac(b"credential|123456") == secrets.pin_pepper.mac(
        b"credential|123456"
    )


def _finalize(token: SoftHsmToken) -> None:
    """Another part of the process finalises the library: every session dies at once."""
    other = PyKCS11.PyKCS11Lib()
    other.load(token.module)
    other.lib.C_Finalize()


def test_the_secrets_refuse_to_start_on_an_unprovisioned_token(
    key_store: Pkcs11KeyStore, data_key: Path
) -> None:
    key_store.secret_key(MAC_LABELS["otp_mac"])
    with pytest.raises(TokenSecretsMissing) as refused:
        token_secrets(key_store, data_key)
    message = str(refused.value)
    assert MAC_LABELS["pin_pepper"] in message and SEAL_LABEL in message
    assert MAC_LABELS["otp_mac"] not in message
    assert "\n" not in message


def test_build_secrets_follows_the_key_store(
    softhsm_token: SoftHsmToken, key_store: Pkcs11KeyStore, tmp_path: Path
) -> None:
    settings = softhsm_token.settings(master_key_file=tmp_path / "absent.key")
    provision_token_secrets(key_store, None, data_key_file(settings.var_dir))
    built = build_secrets(settings, key_store)
    assert repr(built.pin_pepper) == f"TokenMacKey({MAC_LABELS['pin_pepper']!r})"
    assert isinstance(built.outbox_seal, DataSealKey) and built.outbox_seal.legacy is None
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
    for key_label in MAC_LABELS.values():
        [handle] = session.findObjects([(PyKCS11.CKA_LABEL, key_label)])
        values = []
        for attribute in attributes:
            try:
                values.append(session.getAttributeValue(handle, [attribute], allAsBinary=True)[0])
            except PyKCS11.PyKCS11Error as error:
                values.append(error)
        found[key_label] = values
    session.closeSession()
    return [found[key_label] for key_label in MAC_LABELS.values()]


@pytest.mark.parametrize("imported", [False, True])
def test_no_secret_key_can_be_read_out_even_with_the_token_pin(
    softhsm_token: SoftHsmToken, key_store: Pkcs11KeyStore, data_key: Path, imported: bool
) -> None:
    provision_token_secrets(key_store, SOFTWARE if imported else None, data_key)
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


# --- the outbox's data key: stored only wrapped, unwrapped into the process ---


def _everything_stored(root: Path) -> bytes:
    """Every byte of every file under `root`: the token's objects and the var dir alike."""
    return b"".join(path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file())


def _in_any_form(value: bytes, stored: bytes) -> bool:
    return any(
        form in stored
        for form in (value, value.hex().encode(), value.hex().upper().encode(), b64encode(value))
    )


@pytest.mark.parametrize("imported", [False, True])
def test_the_data_key_is_stored_only_wrapped(
    softhsm_token: SoftHsmToken, key_store: Pkcs11KeyStore, data_key: Path, imported: bool
) -> None:
    provisioned = provision_token_secrets(key_store, SOFTWARE if imported else None, data_key)
    assert provisioned[-1].label == SEAL_LABEL
    assert provisioned[-1].outcome == ("imported" if imported else "generated")
    value = key_store.unwrap_data_key("outbox-seal", data_key.read_bytes())
    assert (value == SOFTWARE.outbox_seal) is imported
    assert not key_store.has_secret_key(SEAL_LABEL)  # no AES key in the token any more
    stored = data_key.read_bytes()
    assert len(stored) < 120 and data_key.stat().st_mode & 0o077 == 0
    everything = _everything_stored(softhsm_token.directory.parent)
    assert stored in everything
    assert not _in_any_form(value, everything)


def test_messages_sealed_before_the_data_key_still_open(
    key_store: Pkcs11KeyStore, data_key: Path
) -> None:
    # Stage 2a imported the software key into the token and sealed there with AES-GCM.
    key_store.import_aes_key(SEAL_LABEL, SOFTWARE.outbox_seal)
    sealed_in_token = TokenSealKey(key_store, SEAL_LABEL).seal(b"OTP 654321", b"outbox:m-9")
    provision_token_secrets(key_store, SOFTWARE, data_key)
    seal_key = token_secrets(key_store, data_key).outbox_seal
    assert isinstance(seal_key, DataSealKey) and seal_key.legacy is None  # the same value
    assert seal_key.open(SEALED_BEFORE, b"msg-1") == b"hello outbox"
    assert seal_key.open(sealed_in_token, b"outbox:m-9") == b"OTP 654321"
    assert software_secrets(SOFTWARE).outbox_seal.open(
        seal_key.seal(b"OTP 1", b"outbox:m-2"), b"outbox:m-2"
    ) == (b"OTP 1")


def test_what_a_generated_token_key_sealed_opens_through_the_token(
    key_store: Pkcs11KeyStore, data_key: Path
) -> None:
    # Stage 2a on a new deployment: a key made in the token, whose value nobody knows.
    key_store.aes_key(SEAL_LABEL)
    sealed_in_token = TokenSealKey(key_store, SEAL_LABEL).seal(b"OTP 654321", b"outbox:m-9")
    provision_token_secrets(key_store, None, data_key)
    seal_key = token_secrets(key_store, data_key).outbox_seal
    assert isinstance(seal_key, DataSealKey) and seal_key.legacy is not None
    assert seal_key.open(sealed_in_token, b"outbox:m-9") == b"OTP 654321"
    fresh = seal_key.seal(b"OTP 2", b"outbox:m-3")
    assert seal_key.open(fresh, b"outbox:m-3") == b"OTP 2"
    for blob, associated_data in (
        (sealed_in_token, b"outbox:m-8"),
        (fresh[:-1] + bytes([fresh[-1] ^ 1]), b"outbox:m-3"),
    ):
        with pytest.raises(SealBroken):
            seal_key.open(blob, associated_data)


def test_a_tampered_or_substituted_data_key_file_is_refused(
    key_store: Pkcs11KeyStore, data_key: Path
) -> None:
    provision_token_secrets(key_store, SOFTWARE, data_key)
    stored = data_key.read_bytes()
    person = key_store.generate("cred-1", "ecdsa-p256").blob  # wrapped under the same KEK
    other_purpose = key_store.wrap_data_key("device-seal", SOFTWARE.outbox_seal)
    wrapped_at = len(stored) - 32 - 40
    for altered in (
        stored[:wrapped_at] + bytes([stored[wrapped_at] ^ 1]) + stored[wrapped_at + 1 :],
        stored[:-1] + bytes([stored[-1] ^ 1]),
        stored[:-1],
        person,
        other_purpose,
    ):
        with pytest.raises(KeyBlobRejected):
            key_store.unwrap_data_key("outbox-seal", altered)
        data_key.write_bytes(altered)
        with pytest.raises(TokenSecretsMissing) as refused:
            token_secrets(key_store, data_key)
        assert str(data_key) in str(refused.value) and "\n" not in str(refused.value)
    data_key.unlink()
    with pytest.raises(TokenSecretsMissing, match="wrapped data key file"):
        token_secrets(key_store, data_key)


def test_the_data_key_file_is_provisioned_once_and_kept(
    key_store: Pkcs11KeyStore, data_key: Path
) -> None:
    provision_token_secrets(key_store, SOFTWARE, data_key.with_name("elsewhere"))
    data_key.with_name("elsewhere").unlink()
    assert provision_token_secrets(key_store, None, data_key)[-1].outcome == "generated"
    stored = data_key.read_bytes()
    assert provision_token_secrets(key_store, None, data_key)[-1].outcome == "present"
    with pytest.raises(TokenKeyExists, match="another outbox data key"):
        provision_token_secrets(key_store, SOFTWARE, data_key)
    assert data_key.read_bytes() == stored
    assert [p.name for p in data_key.parent.iterdir()] == [data_key.name]  # no temporary left


def test_subject_refs_are_remembered_and_the_rest_asked_of_the_token(
    key_store: Pkcs11KeyStore, data_key: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    provision_token_secrets(key_store, SOFTWARE, data_key)
    secrets = token_secrets(key_store, data_key)
    asked: list[str] = []
    token_mac = key_store.mac
    monkeypatch.setattr(
        key_store, "mac", lambda label, data: asked.append(label) or token_mac(label, data)
    )
    software = software_secrets(SOFTWARE)
    for _ in range(3):
        assert secrets.subject_ref.mac(b"850101145555") == software.subject_ref.mac(b"850101145555")
        assert secrets.audit_mac.mac(b"event") == software.audit_mac.mac(b"event")
    assert asked == [MAC_LABELS["subject_ref"], *[MAC_LABELS["audit_mac"]] * 3]
    assert isinstance(secrets.subject_ref, CachedMacKey) and secrets.subject_ref.remembered == 1


@pytest.mark.parametrize("size", [1, 31, 32, 64, 65, 600, 10_000])
def test_the_token_macs_any_length_as_hmac_does(key_store: Pkcs11KeyStore, size: int) -> None:
    key_store.import_secret_key("roamsign-test-mac", SOFTWARE.audit_mac)
    data = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    expected = hmac.new(SOFTWARE.audit_mac, data, hashlib.sha256).digest()
    assert key_store.mac("roamsign-test-mac", data) == expected
    with pytest.raises(TokenKeyMissing):
        key_store.mac("roamsign-no-such-key", data)
