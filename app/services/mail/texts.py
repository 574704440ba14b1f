"""The texts of roamsign's e-mails: bilingual (Malay, then English), secret line first."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


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

    def body(self) -> str:
        expiry = self.expires_at.strftime("%Y-%m-%d %H:%M:%S UTC")
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


def mask_email(address: str) -> str:
    local, _, domain = address.partition("@")
    return f"{local[:1]}***@{domain}"


# -- lifecycle notices ------------------------------------------------------------------------
# The token (or nothing secret) comes first, on its own line, before any registered text such
# as the person's name; then Malay, then English. Subjects name the purpose in both languages.


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _token_line(token: str) -> str:
    return f"Token: {token}\n\n"


@dataclass(frozen=True)
class ApplicationVerificationNotice:
    """To the registered address: confirm it, so the roaming application can go on."""

    token: str
    name: str
    expires_at: datetime
    application_id: str

    def subject(self) -> str:
        return "Pengesahan e-mel permohonan roaming / Roaming application: verify your e-mail"

    def body(self) -> str:
        expiry = _when(self.expires_at)
        return (
            _token_line(self.token) + f"Kepada {self.name},\n"
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

    def subject(self) -> str:
        if self.is_renewal:
            return "Tetapkan PIN sijil roaming baharu / Set the PIN of your renewed certificate"
        return "Tetapkan PIN sijil roaming / Set your roaming certificate PIN"

    def body(self) -> str:
        expiry = _when(self.expires_at)
        what_ms = "diperbaharui" if self.is_renewal else "dikeluarkan"
        what_en = "renewed" if self.is_renewal else "issued"
        return (
            _token_line(self.token) + f"Kepada {self.name},\n"
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

    def subject(self) -> str:
        return "Set semula PIN roaming / Roaming PIN reset"

    def body(self) -> str:
        expiry = _when(self.expires_at)
        return (
            _token_line(self.token) + f"Kepada {self.name},\n"
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

    def subject(self) -> str:
        return "Sahkan alamat e-mel baharu / Confirm your new e-mail address"

    def body(self) -> str:
        expiry = _when(self.expires_at)
        return (
            _token_line(self.token) + f"Kepada {self.name},\n"
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


@dataclass(frozen=True)
class EmailChangedNotice:
    """To the old address, once the new one took effect."""

    name: str
    new_address_masked: str
    changed_at: datetime

    def subject(self) -> str:
        return "Alamat e-mel MyGPKI telah ditukar / Your MyGPKI e-mail address was changed"

    def body(self) -> str:
        when = _when(self.changed_at)
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

    def body(self) -> str:
        when = _when(self.changed_at)
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

    def body(self) -> str:
        when = _when(self.locked_at)
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
class SigningNotice:
    """After a signature: what was signed, for whom, and when."""

    document_name: str
    requesting_system: str
    signed_at: datetime
    request_id: str

    def subject(self) -> str:
        return "Dokumen telah ditandatangani / Document signed"

    def body(self) -> str:
        when = _when(self.signed_at)
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


@dataclass(frozen=True)
class CredentialRevokedNotice:
    name: str
    certificate_serial: str
    revoked_at: datetime
    reason: str

    def subject(self) -> str:
        return "Sijil roaming dibatalkan / Your roaming certificate was revoked"

    def body(self) -> str:
        when = _when(self.revoked_at)
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

    def body(self) -> str:
        when = _when(self.not_after)
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
