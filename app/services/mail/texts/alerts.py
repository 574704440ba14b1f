"""The e-mails that tell a person what changed: their address, their PIN, their certificate."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from app.services.mail.texts.common import timestamp


@dataclass(frozen=True)
class EmailChangedNotice:
    """To the old address, once the new one took effect."""

    name: str
    new_address_masked: str
    changed_at: datetime

    def subject(self) -> str:
        return "Alamat e-mel MyGPKI telah ditukar / Your MyGPKI e-mail address was changed"

    def body(self, zone: ZoneInfo) -> str:
        when = timestamp(self.changed_at, zone)
        return (
            f"Kepada {self.name},\n"
            f"Alamat e-mel berdaftar anda telah ditukar kepada {self.new_address_masked}\n"
            f"pada {when}. E-mel OTP dan notis kini dihantar ke alamat baharu itu.\n"
            "Jika anda tidak membuat perubahan ini, hubungi pentadbir anda dengan segera.\n"
            "\n"
            f"Dear {self.name},\n"
            f"Your registered e-mail address was changed to {self.new_address_masked} at\n"
            f"{when}. OTPs and notices now go to that address.\n"
            "If you did not make this change, contact your administrator at once.\n"
        )


@dataclass(frozen=True)
class PinChangedNotice:
    name: str
    changed_at: datetime
    credential_id: str

    def subject(self) -> str:
        return "PIN roaming telah ditukar / Your roaming PIN was changed"

    def body(self, zone: ZoneInfo) -> str:
        when = timestamp(self.changed_at, zone)
        return (
            f"Kepada {self.name},\n"
            f"PIN sijil roaming anda telah ditukar pada {when}.\n"
            "Jika anda tidak membuat perubahan ini, hubungi pentadbir anda dengan segera.\n"
            "\n"
            f"Dear {self.name},\n"
            f"The PIN of your roaming certificate was changed at {when}.\n"
            "If you did not make this change, contact your administrator at once.\n"
            "\n"
            f"Rujukan / Reference: {self.credential_id}\n"
        )


@dataclass(frozen=True)
class CredentialLockedNotice:
    name: str
    locked_at: datetime
    credential_id: str

    def subject(self) -> str:
        return "Sijil roaming dikunci / Your roaming certificate is locked"

    def body(self, zone: ZoneInfo) -> str:
        when = timestamp(self.locked_at, zone)
        return (
            f"Kepada {self.name},\n"
            f"Sijil roaming anda telah dikunci pada {when} selepas PIN yang salah dimasukkan\n"
            "beberapa kali berturut-turut. Set semula PIN dalam portal MyGPKI, atau minta\n"
            "pentadbir JDN membuka kuncinya.\n"
            "\n"
            f"Dear {self.name},\n"
            f"Your roaming certificate was locked at {when} after several wrong PINs in a\n"
            "row. Reset the PIN in the MyGPKI portal, or ask the JDN administrator to unlock\n"
            "it.\n"
            "\n"
            f"Rujukan / Reference: {self.credential_id}\n"
        )


@dataclass(frozen=True)
class CredentialRevokedNotice:
    name: str
    certificate_serial: str
    revoked_at: datetime
    reason: str

    def subject(self) -> str:
        return "Sijil roaming dibatalkan / Your roaming certificate was revoked"

    def body(self, zone: ZoneInfo) -> str:
        when = timestamp(self.revoked_at, zone)
        return (
            f"Kepada {self.name},\n"
            f"Sijil roaming anda (nombor siri {self.certificate_serial}) telah dibatalkan\n"
            f"pada {when} (sebab: {self.reason}). Sijil ini tidak lagi boleh menandatangani.\n"
            "Hubungi pentadbir anda untuk mendapatkan sijil baharu.\n"
            "\n"
            f"Dear {self.name},\n"
            f"Your roaming certificate (serial {self.certificate_serial}) was revoked at\n"
            f"{when} (reason: {self.reason}). It can no longer sign.\n"
            "Contact your administrator for a new certificate.\n"
        )


@dataclass(frozen=True)
class ExpiryNotice:
    name: str
    certificate_serial: str
    not_after: datetime

    def subject(self) -> str:
        return "Sijil roaming akan tamat tempoh / Your roaming certificate expires soon"

    def body(self, zone: ZoneInfo) -> str:
        when = timestamp(self.not_after, zone)
        return (
            f"Kepada {self.name},\n"
            f"Sijil roaming anda (nombor siri {self.certificate_serial}) akan tamat tempoh\n"
            f"pada {when}. Selepas itu ia tidak boleh menandatangani. Minta pentadbir anda\n"
            "memperbaharuinya sebelum tarikh itu.\n"
            "\n"
            f"Dear {self.name},\n"
            f"Your roaming certificate (serial {self.certificate_serial}) expires at {when}.\n"
            "After that it cannot sign. Ask your administrator to renew it before then.\n"
        )
