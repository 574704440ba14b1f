"""What every e-mail text writes the same way: times, the token line, a masked address."""

from __future__ import annotations

from datetime import datetime


def mask_email(address: str) -> str:
    local, _, domain = address.partition("@")
    return f"{local[:1]}***@{domain}"


def timestamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def token_line(token: str) -> str:
    return f"Token: {token}\n\n"
