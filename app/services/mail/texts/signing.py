"""The e-mails of a signature: the OTP that authorises it, the notice once it is made."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from app.services.mail.texts.common import timestamp


@dataclass(frozen=True)
class OtpNotice:
    otp: str
    document_name: str
    requesting_system: str
    hash_algorithm: str
    document_hash_hex: str
    expires_at: datetime
    request_id: str

    @property
    def fingerprint(self) -> str:
        digest = self.document_hash_hex
        return f"{digest[:8]}...{digest[-8:]}".upper()

    def subject(self) -> str:
        return "Kod OTP tandatangan digital / Digital signature OTP"

    def body(self, zone: ZoneInfo) -> str:
        expiry = timestamp(self.expires_at, zone)
        # The OTP line comes before any text the caller supplied (the document name), so no
        # caller-chosen text can push or imitate it.
        return (
            f"Kod OTP / OTP code: {self.otp}\n"
            "\n"
            "Anda diminta menandatangani dokumen berikut secara digital dengan sijil\n"
            "roaming anda.\n"
            f"Dokumen: {self.document_name}\n"
            f"Sistem yang meminta: {self.requesting_system}\n"
            f"Cap jari dokumen ({self.hash_algorithm.upper()}): {self.fingerprint}\n"
            f"Sah sehingga: {expiry}\n"
            "Kod ini untuk satu dokumen sahaja. Jangan kongsi kod ini dengan sesiapa.\n"
            "Jika anda tidak membuat permintaan ini, abaikan e-mel ini dan maklumkan\n"
            "pentadbir anda.\n"
            "\n"
            "You are asked to sign the following document digitally with your roaming\n"
            "certificate.\n"
            f"Document: {self.document_name}\n"
            f"Requesting system: {self.requesting_system}\n"
            f"Document fingerprint ({self.hash_algorithm.upper()}): {self.fingerprint}\n"
            f"Valid until: {expiry}\n"
            "This code is for one document only. Never share it. If you did not ask\n"
            "for this signature, ignore this e-mail and tell your administrator.\n"
            "\n"
            f"Rujukan / Reference: {self.request_id}\n"
        )


@dataclass(frozen=True)
class SigningNotice:
    """After a signature: what was signed, for whom, and when."""

    document_name: str
    requesting_system: str
    signed_at: datetime
    request_id: str

    def subject(self) -> str:
        return "Dokumen telah ditandatangani / Document signed"

    def body(self, zone: ZoneInfo) -> str:
        when = timestamp(self.signed_at, zone)
        return (
            "Dokumen berikut telah ditandatangani secara digital dengan sijil roaming anda.\n"
            f"Dokumen: {self.document_name}\n"
            f"Sistem yang meminta: {self.requesting_system}\n"
            f"Masa: {when}\n"
            "Jika anda tidak menandatangani dokumen ini, maklumkan pentadbir anda dengan\n"
            "segera.\n"
            "\n"
            "The following document was signed digitally with your roaming certificate.\n"
            f"Document: {self.document_name}\n"
            f"Requesting system: {self.requesting_system}\n"
            f"Time: {when}\n"
            "If you did not sign this document, tell your administrator at once.\n"
            "\n"
            f"Rujukan / Reference: {self.request_id}\n"
        )
