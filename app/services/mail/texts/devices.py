"""The e-mails of MyGPKI Mobile: the activation code, and the notice of an activation.

Nothing the unauthenticated caller typed (the model) goes into them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from app.services.mail.texts.common import timestamp


@dataclass(frozen=True, repr=False)
class ActivationCodeNotice:
    code: str
    name: str
    platform: str
    os_version: str
    expires_at: datetime
    device_id: str

    def __repr__(self) -> str:
        return f"ActivationCodeNotice(device_id={self.device_id!r})"

    def subject(self) -> str:
        return "Kod pengaktifan MyGPKI Mobile / MyGPKI Mobile activation code"

    def body(self, zone: ZoneInfo) -> str:
        expiry = timestamp(self.expires_at, zone)
        return (
            f"Kod / Code: {self.code}\n"
            "\n"
            f"Kepada {self.name},\n"
            f"Peranti {self.platform} {self.os_version} telah didaftarkan untuk MyGPKI Mobile\n"
            "dengan MyKad dan nombor telefon anda. Masukkan kod di atas dalam aplikasi untuk\n"
            "mengaktifkannya. Peranti aktif anda yang lain (jika ada) akan dinyahaktifkan.\n"
            f"Kod sah sehingga: {expiry}. Kod ini untuk sekali guna sahaja; jangan kongsi.\n"
            "Jika anda tidak mendaftarkan peranti ini, abaikan e-mel ini dan maklumkan\n"
            "pentadbir anda.\n"
            "\n"
            f"Dear {self.name},\n"
            f"A {self.platform} {self.os_version} device was registered for MyGPKI Mobile with\n"
            "your MyKad and phone number. Enter the code above in the app to activate it.\n"
            "Your other active device (if any) will be deactivated.\n"
            f"The code is valid until {expiry}, for one use only; never share it.\n"
            "If you did not register this device, ignore this e-mail and tell your\n"
            "administrator.\n"
            "\n"
            f"Rujukan / Reference: {self.device_id}\n"
        )


@dataclass(frozen=True)
class DeviceActivatedNotice:
    name: str
    platform: str
    os_version: str
    activated_at: datetime
    replaced_platforms: tuple[str, ...]
    device_id: str

    def subject(self) -> str:
        return "Peranti MyGPKI Mobile diaktifkan / MyGPKI Mobile device activated"

    def body(self, zone: ZoneInfo) -> str:
        when = timestamp(self.activated_at, zone)
        replaced_ms = replaced_en = ""
        if self.replaced_platforms:
            previous = ", ".join(self.replaced_platforms)
            replaced_ms = (
                f"Peranti anda sebelum ini ({previous}) telah dinyahaktifkan dan tidak lagi\n"
                "menerima OTP.\n"
            )
            replaced_en = (
                f"Your previous device ({previous}) was deactivated and no longer receives\nOTPs.\n"
            )
        return (
            f"Kepada {self.name},\n"
            f"MyGPKI Mobile telah diaktifkan pada peranti {self.platform} {self.os_version}\n"
            f"pada {when}. OTP tandatangan anda kini dihantar ke peranti ini.\n"
            f"{replaced_ms}"
            "Jika anda tidak melakukan ini, hubungi pentadbir anda dengan segera.\n"
            "\n"
            f"Dear {self.name},\n"
            f"MyGPKI Mobile was activated on a {self.platform} {self.os_version} device at\n"
            f"{when}. Your signing OTPs now go to this device.\n"
            f"{replaced_en}"
            "If you did not do this, contact your administrator at once.\n"
            "\n"
            f"Rujukan / Reference: {self.device_id}\n"
        )
