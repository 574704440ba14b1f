"""Settings: the environment, the master key and what production refuses to start with."""

from __future__ import annotations

import base64
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from app.errors import ConfigurationError
from app.settings import Profile, Settings, decode_master_key, write_master_key


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No ROAMSIGN_ variable of the machine running the tests leaks into them."""
    for name in list(os.environ):
        if name.upper().startswith("ROAMSIGN_"):
            monkeypatch.delenv(name)
    yield


def key_file(tmp_path: Path, key: bytes | None = None) -> Path:
    path = tmp_path / "master.key"
    write_master_key(path, key or secrets.token_bytes(32))
    return path


# Production safety


def test_production_is_the_default_profile() -> None:
    assert Settings().profile is Profile.PRODUCTION


def test_production_without_a_master_key_file_refuses_to_start(tmp_path: Path) -> None:
    settings = Settings(profile="production", var_dir=tmp_path)
    assert settings.master_key_file is None
    with pytest.raises(ConfigurationError, match="ROAMSIGN_MASTER_KEY_FILE"):
        settings.check_production_safety()
    with pytest.raises(ConfigurationError):
        settings.load_master_key()


def test_production_with_a_master_key_file_starts(tmp_path: Path) -> None:
    key = secrets.token_bytes(32)
    settings = Settings(
        profile="production", var_dir=tmp_path, master_key_file=key_file(tmp_path, key)
    )
    settings.check_production_safety()
    assert settings.load_master_key() == key


def test_production_never_creates_a_missing_key_file(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "master.key"
    settings = Settings(profile="production", var_dir=tmp_path, master_key_file=missing)
    with pytest.raises(ConfigurationError, match="does not exist"):
        settings.load_master_key()
    assert not missing.exists()


@pytest.mark.parametrize("password", ["changeme", "CHANGEME", " password ", "secret", "demo", ""])
def test_a_placeholder_smtp_password_is_refused_in_production(
    tmp_path: Path, password: str
) -> None:
    settings = Settings(
        profile="production",
        var_dir=tmp_path,
        master_key_file=key_file(tmp_path),
        smtp_password=SecretStr(password),
    )
    with pytest.raises(ConfigurationError, match="ROAMSIGN_SMTP_PASSWORD"):
        settings.check_production_safety()


def test_a_real_smtp_password_is_accepted_in_production(tmp_path: Path) -> None:
    settings = Settings(
        profile="production",
        var_dir=tmp_path,
        master_key_file=key_file(tmp_path),
        smtp_password=SecretStr("Vx9-tq2!Lm0#pR7w"),
        smtp_starttls=True,
    )
    settings.check_production_safety()


@pytest.mark.parametrize(
    "smtp",
    [
        {"smtp_host": "smtp.jdn.gov.my"},
        {"smtp_host": "10.0.0.25"},
        {"smtp_host": "127.0.0.1.example"},
        {"smtp_host": "127.0.0.1", "smtp_username": "roamsign"},
        {"smtp_host": "localhost", "smtp_password": SecretStr("Vx9-tq2!Lm0#pR7w")},
    ],
    ids=["name", "address", "look-alike", "username", "password"],
)
def test_production_refuses_e_mail_in_clear_beyond_loopback_or_with_credentials(
    tmp_path: Path, smtp: dict[str, object]
) -> None:
    settings = Settings(
        profile="production", var_dir=tmp_path, master_key_file=key_file(tmp_path), **smtp
    )
    with pytest.raises(ConfigurationError) as refused:
        settings.check_production_safety()
    message = str(refused.value)
    assert "\n" not in message
    assert f"ROAMSIGN_SMTP_HOST={smtp['smtp_host']}" in message
    assert "ROAMSIGN_SMTP_STARTTLS=true" in message and "ROAMSIGN_SMTP_TLS=true" in message
    for tls in ("smtp_starttls", "smtp_tls"):
        Settings(
            profile="production",
            var_dir=tmp_path,
            master_key_file=key_file(tmp_path),
            **smtp,
            **{tls: True},
        ).check_production_safety()
    Settings(profile="demo", var_dir=tmp_path, **smtp).check_production_safety()


@pytest.mark.parametrize("host", ["127.0.0.1", "127.3.4.5", "::1", "[::1]", "localhost"])
def test_production_sends_in_clear_to_a_loopback_relay_without_credentials(
    tmp_path: Path, host: str
) -> None:
    Settings(
        profile="production", var_dir=tmp_path, master_key_file=key_file(tmp_path), smtp_host=host
    ).check_production_safety()


def test_starttls_and_implicit_tls_are_not_both_set(tmp_path: Path) -> None:
    settings = Settings(
        profile="production",
        var_dir=tmp_path,
        master_key_file=key_file(tmp_path),
        smtp_host="smtp.jdn.gov.my",
        smtp_starttls=True,
        smtp_tls=True,
    )
    with pytest.raises(ConfigurationError, match="choose one"):
        settings.check_production_safety()


def test_the_demo_profile_tolerates_placeholders(tmp_path: Path) -> None:
    Settings(
        profile="demo", var_dir=tmp_path, smtp_password=SecretStr("changeme")
    ).check_production_safety()


def test_the_smtp_password_is_secret(tmp_path: Path) -> None:
    settings = Settings(var_dir=tmp_path, smtp_password=SecretStr("Vx9-tq2!Lm0#pR7w"))
    assert "Vx9-tq2!Lm0#pR7w" not in repr(settings)
    assert "Vx9-tq2!Lm0#pR7w" not in str(settings.model_dump())


# The master key


def test_demo_creates_a_private_random_key_under_var_dir(tmp_path: Path) -> None:
    var_dir = tmp_path / "var"
    settings = Settings(profile="demo", var_dir=var_dir)
    assert settings.master_key_file == var_dir / "master.key"
    assert not settings.master_key_file.exists()

    key = settings.load_master_key()
    assert len(key) == 32
    assert settings.master_key_file.exists()
    assert stat.S_IMODE(settings.master_key_file.stat().st_mode) == 0o600
    assert base64.b64decode(settings.master_key_file.read_text().strip(), validate=True) == key
    # Created once: the second start reads the same key back.
    assert settings.load_master_key() == key
    assert Settings(profile="demo", var_dir=var_dir).load_master_key() == key
    assert Settings(profile="demo", var_dir=tmp_path / "other").load_master_key() != key


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o602, 0o610, 0o700 | 0o004])
@pytest.mark.parametrize("profile", ["production", "demo"])
def test_a_master_key_file_open_to_group_or_others_is_refused(
    tmp_path: Path, mode: int, profile: str
) -> None:
    path = key_file(tmp_path)
    path.chmod(mode)
    settings = Settings(profile=profile, var_dir=tmp_path, master_key_file=path)
    with pytest.raises(ConfigurationError) as refused:
        settings.load_master_key()
    message = str(refused.value)
    assert "\n" not in message
    assert "ROAMSIGN_MASTER_KEY_FILE" in message and f"chmod 600 {path}" in message
    assert f"{mode:04o}" in message


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_a_master_key_file_only_its_owner_reads_is_accepted(tmp_path: Path, mode: int) -> None:
    key = secrets.token_bytes(32)
    path = key_file(tmp_path, key)
    path.chmod(mode)
    assert Settings(var_dir=tmp_path, master_key_file=path).load_master_key() == key


def test_write_master_key_makes_a_private_file_even_over_an_open_one(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "master.key"
    path.parent.mkdir()
    path.write_text("old")
    path.chmod(0o644)
    key = secrets.token_bytes(32)
    write_master_key(path, key)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert decode_master_key(path.read_text()) == key


def test_demo_uses_an_explicit_key_file(tmp_path: Path) -> None:
    key = secrets.token_bytes(32)
    path = key_file(tmp_path, key)
    settings = Settings(profile="demo", var_dir=tmp_path / "var", master_key_file=path)
    assert settings.load_master_key() == key
    assert not (tmp_path / "var" / "master.key").exists()


def test_decode_master_key_accepts_openssl_rand_output() -> None:
    key = secrets.token_bytes(32)
    assert decode_master_key(base64.b64encode(key).decode() + "\n") == key
    assert decode_master_key("  " + base64.b64encode(key).decode() + "  \r\n") == key


@pytest.mark.parametrize("size", [0, 16, 31, 33, 64])
def test_a_key_of_the_wrong_size_is_refused(size: int) -> None:
    with pytest.raises(ConfigurationError, match="32 bytes"):
        decode_master_key(base64.b64encode(secrets.token_bytes(size)).decode())


@pytest.mark.parametrize(
    "text",
    [
        "not base64 at all!",
        "0123456789abcdef0123456789abcdef0123456789a",  # 43 characters: bad padding
        base64.urlsafe_b64encode(b"\xfb\xff" * 16).decode(),  # '-' and '_' are not standard
        "ZGVtbw==ZGVtbw==",
    ],
)
def test_a_key_that_is_not_base64_is_refused(text: str) -> None:
    with pytest.raises(ConfigurationError, match="not base64"):
        decode_master_key(text)


@pytest.mark.parametrize(
    "key",
    [bytes(32), b"\xff" * 32, b"0123" * 8, b"changeme" * 4],
    ids=["zeros", "ff", "0123", "text"],
)
def test_a_placeholder_key_is_refused(key: bytes) -> None:
    with pytest.raises(ConfigurationError, match="placeholder"):
        decode_master_key(base64.b64encode(key).decode())


def test_a_placeholder_key_file_stops_loading(tmp_path: Path) -> None:
    settings = Settings(master_key_file=key_file(tmp_path, bytes(32)), var_dir=tmp_path)
    with pytest.raises(ConfigurationError, match="placeholder"):
        settings.load_master_key()


# The environment


def test_settings_are_read_from_roamsign_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = key_file(tmp_path)
    monkeypatch.setenv("ROAMSIGN_PROFILE", "demo")
    monkeypatch.setenv("ROAMSIGN_DATABASE_URL", "postgresql+psycopg://roamsign@db.example/roamsign")
    monkeypatch.setenv("ROAMSIGN_SMTP_HOST", "smtp.jdn.gov.my")
    monkeypatch.setenv("ROAMSIGN_SMTP_PORT", "2525")
    monkeypatch.setenv("ROAMSIGN_OTP_TTL_SECONDS", "300")
    monkeypatch.setenv("ROAMSIGN_KEY_ALGORITHM", "rsa-3072")
    monkeypatch.setenv("ROAMSIGN_MASTER_KEY_FILE", str(path))
    monkeypatch.setenv("ROAMSIGN_SMTP_PASSWORD", "Vx9-tq2!Lm0#pR7w")
    monkeypatch.setenv("SMTP_PORT", "1")  # unprefixed: not ours

    settings = Settings()
    assert settings.profile is Profile.DEMO
    assert settings.database_url == "postgresql+psycopg://roamsign@db.example/roamsign"
    assert not settings.is_sqlite
    assert settings.smtp_host == "smtp.jdn.gov.my"
    assert settings.smtp_port == 2525
    assert settings.otp_ttl_seconds == 300
    assert settings.key_algorithm == "rsa-3072"
    assert settings.master_key_file == path
    assert settings.smtp_password is not None
    assert settings.smtp_password.get_secret_value() == "Vx9-tq2!Lm0#pR7w"


def test_defaults_without_the_environment() -> None:
    settings = Settings()
    assert settings.otp_ttl_seconds == 120
    assert settings.key_algorithm == "ecdsa-p256"
    assert settings.max_body_bytes == 64 * 1024
    assert settings.smtp_password is None


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ROAMSIGN_KEY_ALGORITHM", "dsa-1024"),
        ("ROAMSIGN_PROFILE", "staging"),
        ("ROAMSIGN_OTP_TTL_SECONDS", "0"),
        ("ROAMSIGN_OTP_TTL_SECONDS", "two minutes"),
        ("ROAMSIGN_SMTP_PORT", "smtp"),
    ],
)
def test_invalid_environment_values_are_refused(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        Settings()


def test_the_default_database_is_sqlite_under_var_dir(tmp_path: Path) -> None:
    settings = Settings(var_dir=tmp_path / "state")
    assert settings.is_sqlite
    assert settings.database_url == f"sqlite:///{tmp_path / 'state' / 'roamsign.db'}"
    assert Settings().database_url == f"sqlite:///{Path('var') / 'roamsign.db'}"


def test_the_var_dir_comes_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ROAMSIGN_VAR_DIR", str(tmp_path))
    monkeypatch.setenv("ROAMSIGN_PROFILE", "demo")
    settings = Settings()
    assert settings.database_url == f"sqlite:///{tmp_path / 'roamsign.db'}"
    assert settings.master_key_file == tmp_path / "master.key"
