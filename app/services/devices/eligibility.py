"""Which devices may run MyGPKI Mobile (FAQ 20, 23)."""

from __future__ import annotations

import re
from typing import Literal

from app.errors import DeviceNotEligible

Platform = Literal["android", "ios", "harmonyos"]
# FAQ 23: Android 8 or later, iOS 12 or later, HarmonyOS (Android-based) in any version.
MINIMUM_MAJOR_VERSION: dict[str, int] = {"android": 8, "ios": 12, "harmonyos": 0}
PLATFORM_NAMES: dict[str, str] = {"android": "Android", "ios": "iOS", "harmonyos": "HarmonyOS"}
OS_VERSION_PATTERN = re.compile(r"^[0-9]{1,3}(?:\.[0-9]{1,4}){0,3}$")


def check_eligibility(platform: str, os_version: str, has_sim: bool) -> None:
    """The FAQ's device rules, each refusal naming its rule (`device_not_eligible`)."""
    name = PLATFORM_NAMES[platform]
    minimum = MINIMUM_MAJOR_VERSION[platform]
    if int(os_version.split(".", 1)[0]) < minimum:
        raise _not_eligible(
            f"MyGPKI Mobile needs {name} {minimum} or later; this device runs {name} {os_version}",
            "/os_version",
        )
    if not has_sim:
        raise _not_eligible(
            "MyGPKI Mobile needs a device with a SIM card (a phone, or a tablet with a SIM)",
            "/has_sim",
        )


def _not_eligible(detail: str, pointer: str) -> DeviceNotEligible:
    return DeviceNotEligible(detail, errors=[{"pointer": pointer, "detail": detail}])
