"""The pages' words in Bahasa Malaysia (first, the default) and English."""

from __future__ import annotations

LANGUAGES = ("ms", "en")
DEFAULT_LANGUAGE = "ms"

MESSAGES: dict[str, tuple[str, str]] = {
    # key: (Bahasa Malaysia, English)
    "site": ("roamsign — Tandatangan digital roaming", "roamsign — Roaming digital signatures"),
    "language": ("Bahasa", "Language"),
    "skip": ("Langkau ke kandungan", "Skip to content"),
    "verify_address.title": ("Sahkan alamat e-mel", "Verify your e-mail address"),
    "verify_address.lead": (
        "Tekan butang di bawah untuk mengesahkan alamat e-mel bagi permohonan sijil roaming anda.",
        "Press the button below to confirm the e-mail address of your roaming certificate "
        "application.",
    ),
    "verify_address.submit": ("Sahkan alamat e-mel", "Confirm my e-mail address"),
    "verify_address.done": (
        "Alamat e-mel anda telah disahkan. Permohonan anda kini menunggu kelulusan JDN.",
        "Your e-mail address is confirmed. Your application now awaits JDN's approval.",
    ),
    "set_pin.title": ("Tetapkan PIN sijil roaming", "Set your roaming certificate PIN"),
    "reset_pin.title": ("Tetapkan semula PIN", "Reset your PIN"),
    "set_pin.lead": (
        "Pilih PIN 6 hingga 8 digit yang sukar diteka. Anda akan memasukkannya setiap kali "
        "menandatangani.",
        "Choose a PIN of 6 to 8 digits that is hard to guess. You will enter it with every "
        "signature.",
    ),
    "set_pin.pin": ("PIN baharu", "New PIN"),
    "set_pin.again": ("Ulang PIN baharu", "New PIN again"),
    "set_pin.submit": ("Tetapkan PIN", "Set the PIN"),
    "set_pin.done": (
        "PIN anda telah ditetapkan. Sijil roaming anda sedia untuk menandatangani.",
        "Your PIN is set. Your roaming certificate is ready to sign.",
    ),
    "confirm_email.title": ("Sahkan alamat e-mel baharu", "Confirm your new e-mail address"),
    "confirm_email.lead": (
        "Tekan butang di bawah untuk mula menggunakan alamat e-mel baharu ini.",
        "Press the button below to start using this new e-mail address.",
    ),
    "confirm_email.submit": ("Sahkan alamat baharu", "Confirm the new address"),
    "confirm_email.done": (
        "Alamat e-mel baharu anda kini digunakan. Alamat lama telah dimaklumkan.",
        "Your new e-mail address is now in use. The old address has been told.",
    ),
    "token.missing": (
        "Pautan ini tidak lengkap. Buka pautan penuh daripada e-mel anda.",
        "This link is incomplete. Open the whole link from your e-mail.",
    ),
    "token.expired": (
        "Pautan ini telah tamat tempoh. Minta e-mel baharu daripada pentadbir anda.",
        "This link has expired. Ask your administrator for a new e-mail.",
    ),
    "token.used": (
        "Pautan ini telah digunakan atau digantikan oleh e-mel yang lebih baharu. Ia hanya "
        "boleh digunakan sekali.",
        "This link was already used, or a newer e-mail replaced it. It works only once.",
    ),
    "token.not_valid": (
        "Pautan ini tidak sah. Semak bahawa anda membuka pautan daripada e-mel terkini.",
        "This link is not valid. Check that you opened the link from the latest e-mail.",
    ),
    "error.state": (
        "Langkah ini tidak boleh dibuat sekarang: {detail}",
        "This step cannot be done now: {detail}",
    ),
    "error.busy": (
        "Perkhidmatan sibuk. Cuba sebentar lagi.",
        "The service is busy. Try again in a moment.",
    ),
    "pin.invalid": (
        "PIN mesti 6 hingga 8 digit, bukan digit berulang atau berturutan (contoh 123456).",
        "The PIN must be 6 to 8 digits, not repeated or consecutive digits (such as 123456).",
    ),
    "pin.mismatch": ("Kedua-dua PIN tidak sama.", "The two PINs differ."),
    "pin.same": (
        "PIN baharu mesti berbeza daripada PIN semasa.",
        "The new PIN must differ from the current one.",
    ),
    "csrf.refused": (
        "Borang ini telah tamat tempoh atau tidak datang daripada halaman ini. Muat semula "
        "halaman dan cuba lagi.",
        "This form has expired or did not come from this page. Reload the page and try again.",
    ),
    "not_found": ("Halaman tidak dijumpai.", "Page not found."),
    "refused": ("Permintaan ditolak", "Request refused"),
}


def translate(language: str, key: str, **values: str) -> str:
    malay, english = MESSAGES[key]
    text = english if language == "en" else malay
    return text.format(**values) if values else text
