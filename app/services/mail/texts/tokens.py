"""The e-mails that carry a single-use token: verify an address, set or reset a PIN."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from app.services.mail.texts.common import page_link, timestamp, token_line


@dataclass(frozen=True)
class ApplicationVerificationNotice:
    """To the registered address: confirm it, so the roaming application can go on."""

    token: str
    name: str
    expires_at: datetime
    application_id: str
    # The self-service pages' base URL (settings.token_link_base): the token comes as a link too.
    link_base: str | None = None

    def subject(self) -> str:
        return "Pengesahan e-mel permohonan roaming / Roaming application: verify your e-mail"

    def body(self, zone: ZoneInfo) -> str:
        expiry = timestamp(self.expires_at, zone)
        return (
            token_line(
                self.token, page_link(self.link_base, f"/me/verify-address/{self.application_id}")
            )
            + f"Kepada {self.name},\n"
            "Permohonan sijil roaming (tandatangan digital dengan OTP) telah dibuka untuk anda.\n"
            "Sahkan alamat e-mel ini dengan memasukkan token di atas dalam portal MyGPKI.\n"
            f"Token sah sehingga: {expiry}. Token ini untuk sekali guna sahaja.\n"
            "Jika anda tidak mengenali permohonan ini, abaikan e-mel ini dan maklumkan\n"
            "pentadbir anda.\n"
            "\n"
            f"Dear {self.name},\n"
            "A roaming certificate application (digital signing with an OTP) was opened for\n"
            "you. Confirm this e-mail address by entering the token above in the MyGPKI portal.\n"
            f"The token is valid until {expiry}, for one use only.\n"
            "If you do not recognise this application, ignore this e-mail and tell your\n"
            "administrator.\n"
            "\n"
            f"Rujukan / Reference: {self.application_id}\n"
        )


@dataclass(frozen=True)
class PinSetupNotice:
    """To the person: the CA issued their roaming certificate; set its PIN to activate it."""

    token: str
    name: str
    certificate_serial: str
    expires_at: datetime
    credential_id: str
    is_renewal: bool = False
    link_base: str | None = None

    def subject(self) -> str:
        if self.is_renewal:
            return "Tetapkan PIN sijil roaming baharu / Set the PIN of your renewed certificate"
        return "Tetapkan PIN sijil roaming / Set your roaming certificate PIN"

    def body(self, zone: ZoneInfo) -> str:
        expiry = timestamp(self.expires_at, zone)
        what_ms = "diperbaharui" if self.is_renewal else "dikeluarkan"
        what_en = "renewed" if self.is_renewal else "issued"
        return (
            token_line(self.token, page_link(self.link_base, f"/me/set-pin/{self.credential_id}"))
            + f"Kepada {self.name},\n"
            f"Sijil roaming anda telah {what_ms} (nombor siri {self.certificate_serial}).\n"
            "Tetapkan PIN dalam portal MyGPKI dengan token di atas; sijil boleh digunakan\n"
            "untuk menandatangani selepas PIN ditetapkan.\n"
            f"Token sah sehingga: {expiry}. Token ini untuk sekali guna sahaja.\n"
            "\n"
            f"Dear {self.name},\n"
            f"Your roaming certificate has been {what_en} (serial {self.certificate_serial}).\n"
            "Set its PIN in the MyGPKI portal with the token above; the certificate signs\n"
            "once the PIN is set.\n"
            f"The token is valid until {expiry}, for one use only.\n"
            "\n"
            f"Rujukan / Reference: {self.credential_id}\n"
        )


@dataclass(frozen=True)
class PinResetNotice:
    token: str
    name: str
    expires_at: datetime
    credential_id: str
    link_base: str | None = None

    def subject(self) -> str:
        return "Set semula PIN roaming / Roaming PIN reset"

    def body(self, zone: ZoneInfo) -> str:
        expiry = timestamp(self.expires_at, zone)
        return (
            token_line(self.token, page_link(self.link_base, f"/me/reset-pin/{self.credential_id}"))
            + f"Kepada {self.name},\n"
            "Satu permintaan untuk menetapkan semula PIN sijil roaming anda telah dibuat.\n"
            "Masukkan token di atas dalam portal MyGPKI bersama PIN baharu anda.\n"
            f"Token sah sehingga: {expiry}. Token ini untuk sekali guna sahaja.\n"
            "Jika anda tidak membuat permintaan ini, abaikan e-mel ini; PIN anda tidak\n"
            "berubah.\n"
            "\n"
            f"Dear {self.name},\n"
            "Someone asked to reset the PIN of your roaming certificate. Enter the token\n"
            "above in the MyGPKI portal with your new PIN.\n"
            f"The token is valid until {expiry}, for one use only.\n"
            "If you did not ask for this, ignore this e-mail: your PIN is unchanged.\n"
            "\n"
            f"Rujukan / Reference: {self.credential_id}\n"
        )


@dataclass(frozen=True)
class EmailChangeNotice:
    """To the new address: it takes effect only once this token is confirmed."""

    token: str
    name: str
    expires_at: datetime
    user_id: str = ""
    link_base: str | None = None

    def subject(self) -> str:
        return "Sahkan alamat e-mel baharu / Confirm your new e-mail address"

    def body(self, zone: ZoneInfo) -> str:
        expiry = timestamp(self.expires_at, zone)
        return (
            token_line(self.token, self._link()) + f"Kepada {self.name},\n"
            "Alamat e-mel ini telah dimasukkan sebagai alamat baharu anda dalam MyGPKI.\n"
            "Alamat ini hanya digunakan selepas anda mengesahkannya dengan token di atas\n"
            "dalam portal MyGPKI.\n"
            f"Token sah sehingga: {expiry}. Token ini untuk sekali guna sahaja.\n"
            "\n"
            f"Dear {self.name},\n"
            "This address was entered as your new e-mail address in MyGPKI. It is used only\n"
            "once you confirm it with the token above in the MyGPKI portal.\n"
            f"The token is valid until {expiry}, for one use only.\n"
        )

    def _link(self) -> str | None:
        if not self.user_id:
            return None
        return page_link(self.link_base, f"/me/confirm-email/{self.user_id}")
