"""Every secret roamsign uses, derived from the one master key with HKDF (one label each)."""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


def derive(master_key: bytes, label: str) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=f"roamsign/{label}/v1".encode()
    ).derive(master_key)


@dataclass(frozen=True, repr=False)
class DerivedKeys:
    """The purpose-bound keys; none of them is ever stored."""

    otp_mac: bytes
    pin_pepper: bytes
    outbox_seal: bytes
    key_store: bytes
    audit_mac: bytes
    subject_ref: bytes
    token_mac: bytes
    sad_mac: bytes
    activation_code_mac: bytes

    @classmethod
    def from_master(cls, master_key: bytes) -> DerivedKeys:
        return cls(
            otp_mac=derive(master_key, "otp-mac"),
            pin_pepper=derive(master_key, "pin-pepper"),
            outbox_seal=derive(master_key, "outbox-seal"),
            key_store=derive(master_key, "key-store"),
            audit_mac=derive(master_key, "audit-mac"),
            subject_ref=derive(master_key, "subject-ref"),
            token_mac=derive(master_key, "token-mac"),
            sad_mac=derive(master_key, "sad-mac"),
            activation_code_mac=derive(master_key, "activation-code-mac"),
        )

    def __repr__(self) -> str:
        return "DerivedKeys(<redacted>)"
