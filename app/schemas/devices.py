"""MyGPKI Mobile: registration, activation, the device's OTP messages, JDN's device list."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, Field, StrictBool

from app.schemas.common import MyKad, Phone, RequestModel
from app.validation import check_display_text

DevicePlatform = Literal["android", "ios", "harmonyos"]
DeviceStatusName = Literal["pending_activation", "active", "deactivated"]

OsVersion = Annotated[
    str,
    Field(
        max_length=32,
        pattern=r"^[0-9]{1,3}(\.[0-9]{1,4}){0,3}$",
        description="The operating system's version, such as 14, 8.1.0 or 17.4.1",
        examples=["14"],
    ),
]
DeviceModel = Annotated[
    str,
    Field(min_length=1, max_length=100, examples=["Galaxy A54"]),
    AfterValidator(lambda value: check_display_text(value, max_length=100)),
]


class DeviceRegistrationIn(RequestModel):
    mykad: MyKad
    phone: Phone = Field(description="The phone number registered in MyGPKI for this MyKad")
    platform: DevicePlatform
    os_version: OsVersion
    has_sim: StrictBool = Field(description="MyGPKI Mobile needs a SIM card (phone or tablet)")
    model: DeviceModel | None = None


class DeviceRegistered(BaseModel):
    device_id: str
    status: Literal["pending_activation"]
    activation_expires_at: datetime = Field(description="Until when the e-mailed code works")


class DeviceActivationIn(RequestModel):
    code: str = Field(
        min_length=1, max_length=16, description="The 6-digit code e-mailed at registration"
    )
    public_key: str = Field(
        min_length=1,
        max_length=4096,
        description="The app's ECDSA P-256 public key, PEM (BEGIN PUBLIC KEY); it verifies "
        "the RFC 9421 signature of every later request of this device",
    )


class DeviceOut(BaseModel):
    device_id: str
    status: DeviceStatusName
    platform: DevicePlatform
    os_version: str
    model: str | None
    phone: str = Field(description="The registered number's last four digits, masked")
    created_at: datetime
    activation_expires_at: datetime | None = Field(
        description="While the device waits for its activation code"
    )
    activated_at: datetime | None
    deactivated_at: datetime | None
    deactivation_reason: (
        Literal["replaced", "superseded", "removed_by_device", "administrator", "phone_changed"]
        | None
    )
    last_seen_at: datetime | None = Field(description="The last accepted signed request")


class OtpMessageOut(BaseModel):
    request_id: str = Field(description="The signing request this OTP belongs to")
    otp: str = Field(description="The 6-digit OTP")
    document_name: str
    requesting_system: str
    hash_algorithm: Literal["sha256", "sha384", "sha512"]
    document_fingerprint: str = Field(description="First and last 8 hex digits of the hash")
    issued_at: datetime
    expires_at: datetime


class DeviceMessagesOut(BaseModel):
    messages: list[OtpMessageOut] = Field(
        description="Each pending OTP once, oldest first; never one past its expiry"
    )
