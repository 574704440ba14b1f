"""Settings from the environment (prefix ``ROAMSIGN_``); nothing else reads ``os.environ``."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
import secrets
import stat
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.errors import ConfigurationError

KeyAlgorithmName = Literal["ecdsa-p256", "rsa-2048", "rsa-3072"]

DEFAULT_VAR_DIR = Path("var")
PLACEHOLDER_SECRETS = frozenset({"", "changeme", "change-me", "secret", "password", "demo"})


class Profile(StrEnum):
    DEMO = "demo"
    PRODUCTION = "production"


class Settings(BaseSettings):
    """Every knob of roamsign. Tests build one directly; the app reads the environment once."""

    model_config = SettingsConfigDict(env_prefix="ROAMSIGN_", extra="ignore")

    profile: Profile = Profile.PRODUCTION
    var_dir: Path = DEFAULT_VAR_DIR
    database_url: str = ""
    # PostgreSQL connections each server process keeps (opened as needed, never more): size
    # it to the requests a process serves at once; workers x this must stay under the
    # server's max_connections. SQLite always uses one.
    database_pool_size: int = Field(default=20, ge=1, le=200)
    master_key_file: Path | None = None

    otp_ttl_seconds: int = Field(default=120, ge=10, le=3600)
    otp_max_attempts: int = Field(default=3, ge=1, le=10)
    pin_max_failures: int = Field(default=5, ge=1, le=20)
    # Consecutive failed checks for one person (across requests) before signing is held back.
    person_failure_threshold: int = Field(default=10, ge=1)
    person_hold_base_seconds: int = Field(default=30, ge=1)
    person_hold_max_seconds: int = Field(default=3600, ge=1)

    key_algorithm: KeyAlgorithmName = "ecdsa-p256"
    certificate_validity_days: int = Field(default=730, ge=1, le=3650)
    ca_name: str = "roamsign Demo"

    # The port `python -m app serve` listens on without --port (the image's health check asks it).
    port: int = Field(default=8000, ge=1, le=65535)

    smtp_host: str = "127.0.0.1"
    smtp_port: int = 8025
    smtp_starttls: bool = False
    # Implicit TLS (SMTPS, usually port 465): the connection is TLS from its first byte.
    smtp_tls: bool = False
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_timeout_seconds: float = 10.0
    mail_from: str = "roamsign <no-reply@roamsign.local>"
    delivery_worker: bool = True
    delivery_poll_seconds: float = 1.0
    # Delivery loops per server process, each with its own SMTP connection: an SMTP exchange
    # is several round trips, so one connection caps the e-mails a second whatever the CPU.
    delivery_concurrency: int = Field(default=4, ge=1, le=32)
    delivery_max_attempts: int = Field(default=8, ge=1)
    delivery_backoff_base_seconds: float = 2.0

    # --- abuse limits on OTP issuance (native signing requests and CSC sendOTP), a minute ---
    # Per person, whichever signers ask: nobody is flooded with codes.
    otps_per_person_per_minute: int = Field(default=5, ge=1, le=1_000_000)
    # Per signer and person, below the person's: one signer (a runaway backend, a leaked key)
    # cannot use up a person's OTPs for the others, who keep the difference (2 a minute) at
    # least. Counted first; only a request it lets through counts against the person.
    otps_per_signer_person_per_minute: int = Field(default=3, ge=1, le=1_000_000)
    # Per signer (API client). Each OTP is read and typed by a person, so 6,000 a minute (100 a
    # second, 360,000 people an hour) is well above the busiest backend's real peak, yet a
    # third of the rate the service is built for (300 flows a second, issue #8): one runaway
    # or stolen key can neither take the whole service from the other signers nor e-mail more
    # than 6,000 people a minute. Raise it for a backend that needs more.
    otps_per_signer_per_minute: int = Field(default=6000, ge=1, le=1_000_000)

    # --- lifecycle (applications, tokens, PINs, revocation, renewal) ---
    # Where relying parties reach this service: the certificates' CRL distribution point and
    # CA issuers (AIA) URLs are built on it, so it must be the public address, not a bind one.
    public_base_url: str = "http://127.0.0.1:8000"
    # E-mailed one-time tokens: address verification (applications and e-mail changes), the
    # first PIN of a new credential, and a PIN reset.
    email_token_ttl_seconds: int = Field(default=72 * 3600, ge=300)
    pin_setup_token_ttl_seconds: int = Field(default=7 * 24 * 3600, ge=300)
    pin_reset_token_ttl_seconds: int = Field(default=3600, ge=300)
    # E-mails sent again on request (a resent notification, a PIN reset, an address change),
    # per person, per kind, in any 24 hours.
    token_emails_per_day: int = Field(default=5, ge=1)
    # No PIN reset goes to an address changed more recently than this.
    pin_reset_email_age_seconds: int = Field(default=24 * 3600, ge=0)
    expiry_notice_days: int = Field(default=30, ge=1)
    # The periodic jobs (expiry notices): how often each process looks for due jobs, how often
    # the expiry job is due, and how long a run may hold its lease before another may take it.
    jobs_poll_seconds: float = Field(default=60.0, gt=0)
    expiry_notice_interval_seconds: int = Field(default=3600, ge=1)
    job_lease_seconds: int = Field(default=900, ge=10)

    # Signing requests that never signed (expired, locked, cancelled), finished e-mail and
    # device messages, and one-time tokens are deleted this many days after their end by the
    # retention job; signatures, the requests they signed and the audit trail are kept.
    retention_days: int = Field(default=90, ge=1, le=3650)

    # --- audit checkpoints (app/services/audit/checkpoint.py) ---
    # Signed checkpoints of every audit chain's head, appended outside the database (one
    # JSON-lines file a day): point it at what a log shipper or a WORM mount takes away.
    # Default: `audit-checkpoints` under the var dir.
    audit_checkpoint_dir: Path | None = None
    # The job writes one when the trail has grown by this many events, or this long after the
    # last one, whichever comes first (it looks every minute at most).
    audit_checkpoint_every_events: int = Field(default=10_000, ge=1)
    audit_checkpoint_interval_seconds: int = Field(default=600, ge=10)

    # --- evidence: trusted time (RFC 3161) ---
    # The TSA that stamps each CMS signature (RFC 3161 over HTTP: in production an accredited
    # TSA). Empty: the built-in one (`POST /v1/tsa`), called in-process.
    tsa_url: str = ""
    # Bounds each phase of the exchange with a remote TSA; past it the signature call answers
    # 503 `tsa_unavailable`, nothing signed and the OTP still usable.
    tsa_timeout_seconds: float = Field(default=3.0, gt=0, le=30)
    # The policy the built-in TSA's tokens name (TSTInfo.policy): an OID of the operator's arc.
    tsa_policy_oid: str = Field(default="1.3.6.1.4.1.99999.1.3161", pattern=r"^[0-2](\.\d+)+$")

    # --- Cloud Signature Consortium API ---
    # Lifetime of a SAD (credentials/authorize -> signatures/signHash); the contract caps it at 60.
    csc_sad_ttl_seconds: int = Field(default=60, ge=5, le=60)

    # --- MyGPKI Mobile ---
    # The activation code e-mailed at registration: its validity and how many tries it allows.
    device_activation_ttl_seconds: int = Field(default=600, ge=10, le=3600)
    device_activation_max_attempts: int = Field(default=3, ge=1, le=10)
    # Registrations answer without an API key, so they are counted per MyKad and per client
    # address in a fixed window: they must not become an oracle for MyKad/phone pairs.
    # Every attempt counts per address, and per address for one MyKad; only a registration with
    # the right phone counts per MyKad, so wrong phones never block the person's own.
    device_registrations_per_mykad: int = Field(default=5, ge=1)
    device_registrations_per_mykad_per_address: int = Field(default=5, ge=1)
    device_registrations_per_address: int = Field(default=30, ge=1)
    device_registration_window_seconds: int = Field(default=3600, ge=60)
    # A signed request's `created` may differ from the server's clock by this much; its nonce
    # is remembered for as long as the signature could otherwise still be accepted.
    device_signature_max_skew_seconds: int = Field(default=60, ge=5, le=300)
    # How often a long-poll looks at the database for messages stored by another process
    # (messages stored by its own process wake it at once).
    device_message_poll_seconds: float = Field(default=0.2, gt=0, le=5)

    max_body_bytes: int = 64 * 1024
    log_level: str = "INFO"
    log_json: bool = True
    metrics_dir: Path | None = None

    # --- key custody (app/crypto/pkcs11.py) ---
    # `software`: keys sealed under the master key. `pkcs11`: keys and secrets in a token.
    key_store: Literal["software", "pkcs11"] = "software"
    # The HSM vendor's PKCS#11 library. Production must name it; the demo profile falls back
    # to Debian's SoftHSM2, a software token that protects nothing a copy of the host's files
    # would not also reveal.
    pkcs11_module: str = ""
    # PKCS#11 labels are 32 bytes, blank-padded.
    pkcs11_token_label: str = Field(default="roamsign", min_length=1, max_length=32)
    # The token's user PIN, first line of the file.
    pkcs11_pin_file: Path | None = None
    # The outbox's data key, wrapped under the token's KEK (app.crypto.pkcs11_secrets); by
    # default in the var dir. Every host of a deployment needs the same file.
    pkcs11_data_key_file: Path | None = None

    # --- pages (app/routers/pages) and what people read ---
    # The times in e-mails are in this IANA zone, the zone named.
    timezone: str = "Asia/Kuala_Lumpur"
    # Self-service pages under /me/ (and every e-mailed token as a link to its page, under
    # public_base_url); off for deployments whose MyGPKI portal does this.
    self_service: bool = True
    # A page session (/me/ and /console/): its idle and absolute lifetimes.
    web_session_idle_seconds: int = Field(default=15 * 60, ge=60, le=24 * 3600)
    web_session_max_seconds: int = Field(default=8 * 3600, ge=300, le=7 * 24 * 3600)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (an IANA name)") from None
        return value

    @property
    def token_link_base(self) -> str | None:
        """Where e-mailed tokens link to (None: no self-service pages, no links)."""
        return self.public_base_url.rstrip("/") if self.self_service else None

    @model_validator(mode="after")
    def _fill_pkcs11_defaults(self) -> Settings:
        if self.pkcs11_module and not Path(self.pkcs11_module).is_absolute():
            raise ValueError("ROAMSIGN_PKCS11_MODULE must be an absolute path")
        if not self.pkcs11_module and self.profile is Profile.DEMO:
            softhsm = (
                Path("/usr/lib/softhsm/libsofthsm2.so"),
                Path("/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so"),
                Path("/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so"),
            )
            self.pkcs11_module = str(next((p for p in softhsm if p.exists()), softhsm[0]))
        return self

    @model_validator(mode="after")
    def _check_tsa_url(self) -> Settings:
        if self.tsa_url and not self.tsa_url.startswith(("http://", "https://")):
            raise ValueError("ROAMSIGN_TSA_URL must be an http(s) URL, or empty for the built-in")
        return self

    @model_validator(mode="after")
    def _fill_defaults(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite:///{self.var_dir / 'roamsign.db'}"
        if self.master_key_file is None and self.profile is Profile.DEMO:
            self.master_key_file = self.var_dir / "master.key"
        if self.audit_checkpoint_dir is None:
            self.audit_checkpoint_dir = self.var_dir / "audit-checkpoints"
        return self

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def check_production_safety(self) -> None:
        """Refuse to run production with a missing master key, placeholder secrets or e-mail
        (OTPs, tokens) sent in clear beyond this machine or with a password."""
        if self.profile is not Profile.PRODUCTION:
            return
        if self.master_key_file is None:
            raise ConfigurationError("ROAMSIGN_MASTER_KEY_FILE is required in production")
        if self.smtp_password is not None and (
            self.smtp_password.get_secret_value().strip().lower() in PLACEHOLDER_SECRETS
        ):
            raise ConfigurationError("ROAMSIGN_SMTP_PASSWORD is a placeholder")
        if self.smtp_starttls and self.smtp_tls:
            raise ConfigurationError(
                "ROAMSIGN_SMTP_STARTTLS and ROAMSIGN_SMTP_TLS are both set: choose one"
            )
        has_credentials = self.smtp_username is not None or self.smtp_password is not None
        if (has_credentials or not is_loopback(self.smtp_host)) and not (
            self.smtp_starttls or self.smtp_tls
        ):
            why = "SMTP credentials are set" if has_credentials else "the relay is not loopback"
            raise ConfigurationError(
                f"e-mail to ROAMSIGN_SMTP_HOST={self.smtp_host} in clear: {why}; set "
                "ROAMSIGN_SMTP_STARTTLS=true or ROAMSIGN_SMTP_TLS=true (implicit TLS, port 465)"
            )

    def load_master_key(self) -> bytes:
        """The 32-byte master key; the demo profile creates it on first use. Refused when the
        file is open to group or others: the key unlocks every PIN, OTP and the audit trail."""
        path = self.master_key_file
        if path is None:
            raise ConfigurationError("ROAMSIGN_MASTER_KEY_FILE is not set")
        if not path.exists():
            if self.profile is not Profile.DEMO:
                raise ConfigurationError(f"master key file {path} does not exist")
            write_master_key(path, secrets.token_bytes(32))
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise ConfigurationError(
                f"ROAMSIGN_MASTER_KEY_FILE {path} is open to group or others (mode {mode:04o}): "
                f"chmod 600 {path}"
            )
        return decode_master_key(path.read_text())


def write_master_key(path: Path, key: bytes) -> None:
    """`key` in base64 in the file `path`, readable by its owner only from its creation."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(descriptor, 0o600)  # O_CREAT's mode applies to a new file only
    with os.fdopen(descriptor, "w") as file:
        file.write(base64.b64encode(key).decode() + "\n")


def is_loopback(host: str) -> bool:
    """Whether `host` is this machine: `localhost` or a loopback address (127/8, ::1)."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def decode_master_key(text: str) -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ConfigurationError("the master key file is not base64") from exc
    if len(key) != 32:
        raise ConfigurationError("the master key must be 32 bytes (openssl rand -base64 32)")
    if len(set(key)) < 8:
        raise ConfigurationError("the master key is a placeholder, not random bytes")
    return key


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
