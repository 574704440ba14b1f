"""The software secrets give today's values byte for byte: every PIN MAC, OTP MAC, e-mailed
token, SAD, activation code, subject ref and audit chain stored before the `Secrets`
interface still verifies, and every sealed message still opens.

The vectors were computed with the code as it was before the interface (raw key bytes passed
to `hmac.new` and `AESGCM`), for the master key 00 01 02 ... 1f.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import pytest

from app.crypto.keys import (
    MAC_PURPOSES,
    CachedMacKey,
    DerivedKeys,
    Secrets,
    SoftwareMacKey,
    SoftwareSealKey,
    software_secrets,
)
from app.crypto.sealing import SealBroken
from app.crypto.secrets import OtpBinding, keyed_digest, otp_mac, pin_mac
from app.services.audit.event import event_mac, subject_ref
from app.services.devices.activation_code import activation_code_mac
from app.services.lifecycle.tokens import token_mac

MASTER = bytes(range(32))
BINDING = OtpBinding("req-1", "cred-1", "sha256", "ab" * 32, "igfmas")
# nonce 00 * 12 || AES-256-GCM("hello outbox", associated data "msg-1") under outbox-seal.
SEALED_BEFORE = bytes.fromhex(
    "000000000000000000000000de64f6577d800cef0d0c02282bddd803c75516de09097e11f98f50b5"
)


@pytest.fixture(scope="module")
def secrets() -> Secrets:
    return software_secrets(DerivedKeys.from_master(MASTER))


def test_the_derived_values_are_unchanged() -> None:
    keys = DerivedKeys.from_master(MASTER)
    assert keys.pin_pepper.hex() == (
        "6a7af411f80b5a9447e070630c2e8ecf4df50347631965f6d47a9f7c69d8899a"
    )
    assert keys.outbox_seal.hex() == (
        "f60367823f535ed7cf03a736b5a9df10af48996e31e50bfb3da00718aacab1c0"
    )
    assert hashlib.sha256(keys.key_store).hexdigest() == (
        "1ac465df6f3e3b4f97dda6de233f366f4b0f63d1ead0403aba2f9be1704fbf9e"
    )


def test_otp_and_pin_macs_are_todays(secrets: Secrets) -> None:
    assert otp_mac(secrets.otp_mac, "123456", BINDING).hex() == (
        "8835829b072e6bed77eaaa671c77a356320a36bf82474deccdee0e9ae59f9fea"
    )
    assert pin_mac(secrets.pin_pepper, "cred-1", "730519").hex() == (
        "2c4f4818b2f73d20927e8936d1d237be6dc96236f56acb0df435cdc32269d2e0"
    )


def test_subject_refs_and_rate_keys_are_todays(secrets: Secrets) -> None:
    assert subject_ref(secrets.subject_ref, "850101-14-5555") == (
        "632f232405bfe15e5a9e8f48482a602fe6f86ac8f274b83c5ce073ec273dfde7"
    )
    assert keyed_digest(secrets.subject_ref, "otp_per_person:p1") == (
        "647d07c986bb5e020e4901352b68390874e6c4f9709561fa21d4489bee4a5110"
    )


def test_audit_event_macs_are_todays(secrets: Secrets) -> None:
    mac = event_mac(
        secrets.audit_mac,
        chain=3,
        seq=7,
        previous_mac="0" * 64,
        occurred_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        action="signature.created",
        actor="igfmas",
        subject_ref="ab",
        mykad_masked="8501******55",
        target_id="t-1",
        outcome="ok",
        details={"n": 1, "b": True},
    )
    assert mac == "a83e4e9b832b5b82d035f95338c4184a9ac663d5a2803899de3d256eef6d100f"


def test_token_sad_and_activation_code_macs_are_todays(secrets: Secrets) -> None:
    assert token_mac(secrets.token_mac, "pin_reset", "cred-1", "tok-abc").hex() == (
        "6d8cb8b230670a815ecc0635f0526bd6eb045c43f2ece1a39c54579eb0d4134a"
    )
    # CscService._sad_mac: the binding, then the SAD's secret part.
    assert secrets.sad_mac.mac(BINDING.encode() + b"sad-secret").hex() == (
        "66c5182011bdf4ebfce40694f57e674087aede697a2572d9f923ddf649f74c4f"
    )
    assert activation_code_mac(secrets.activation_code_mac, "dev-1", "123456").hex() == (
        "4b9126da62b296ea58a979d00b1e2f2bd19dec839fb7cf1a69a28cb6e6038838"
    )


def test_a_message_sealed_before_still_opens_and_only_for_its_id(secrets: Secrets) -> None:
    assert secrets.outbox_seal.open(SEALED_BEFORE, b"msg-1") == b"hello outbox"
    with pytest.raises(SealBroken):
        secrets.outbox_seal.open(SEALED_BEFORE, b"msg-2")
    with pytest.raises(SealBroken):
        secrets.outbox_seal.open(SEALED_BEFORE[:12], b"msg-1")


def test_seal_and_open_round_trip_with_a_fresh_nonce_each_time(secrets: Secrets) -> None:
    first = secrets.outbox_seal.seal(b"otp 123456", b"outbox:1")
    second = secrets.outbox_seal.seal(b"otp 123456", b"outbox:1")
    assert first != second and len(first) == 12 + len(b"otp 123456") + 16
    assert secrets.outbox_seal.open(second, b"outbox:1") == b"otp 123456"
    tampered = first[:-1] + bytes([first[-1] ^ 1])
    with pytest.raises(SealBroken):
        secrets.outbox_seal.open(tampered, b"outbox:1")


def test_each_purpose_has_its_own_key(secrets: Secrets) -> None:
    macs = {getattr(secrets, name).mac(b"same input") for name in MAC_PURPOSES}
    assert len(macs) == len(MAC_PURPOSES) == 7


def test_no_key_shows_in_a_repr(secrets: Secrets) -> None:
    keys = DerivedKeys.from_master(MASTER)
    shown = repr(secrets) + repr(SoftwareMacKey(keys.otp_mac)) + repr(SoftwareSealKey(b"k" * 32))
    assert "redacted" in shown
    for name in (*MAC_PURPOSES, "outbox_seal"):
        value: bytes = getattr(keys, name)
        assert value.hex() not in shown and repr(value) not in shown


def test_a_cached_mac_key_answers_as_its_key_and_forgets_the_oldest(secrets: Secrets) -> None:
    asked: list[bytes] = []

    class Counting:
        def mac(self, data: bytes) -> bytes:
            asked.append(data)
            return secrets.subject_ref.mac(data)

    cached = CachedMacKey(Counting(), size=2)
    for data in (b"a", b"a", b"b", b"a", b"c", b"b"):
        assert cached.mac(data) == secrets.subject_ref.mac(data)
    assert asked == [b"a", b"b", b"c", b"b"]  # "b" was the least recently used when "c" came
    assert cached.remembered == 2
    assert repr(CachedMacKey(secrets.subject_ref)) == "CachedMacKey(SoftwareMacKey(<redacted>))"
