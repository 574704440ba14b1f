"""What every e-mail text writes the same way: times, the token line, a masked address."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo


def mask_email(address: str) -> str:
    local, _, domain = address.partition("@")
    return f"{local[:1]}***@{domain}"


def timestamp(moment: datetime, zone: ZoneInfo) -> str:
    """`2026-11-27 18:00:00 (UTC+08:00, Asia/Kuala_Lumpur)`: the local time, its offset and
    the zone's name. E-mails and pages speak the person's time: settings.timezone, built once
    into app.runtime's `NoticeContext`. No default zone: one would quietly ignore the setting."""
    local = moment.astimezone(zone)
    offset = local.strftime("%z")
    return f"{local:%Y-%m-%d %H:%M:%S} (UTC{offset[:3]}:{offset[3:]}, {zone.key})"


def token_line(token: str, link: str | None = None) -> str:
    """The token on a line of its own; then, with self-service pages, the link that carries it
    in the URL fragment (`#`), which a browser never sends to a server or in a Referer."""
    if link is None:
        return f"Token: {token}\n\n"
    return f"Token: {token}\nPautan / Link: {link}#{token}\n\n"


def page_link(base_url: str | None, path: str) -> str | None:
    """The self-service page at `path` (`/me/...`), or None when there are no such pages."""
    if base_url is None:
        return None
    return base_url.rstrip("/") + path
