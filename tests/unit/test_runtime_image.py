"""The runtime image (Dockerfile) as the issue asks it: a base pinned by digest, dependencies
installed from hashes, the health check on the server's own port setting, no demo mail sink,
Swagger UI vendored by its own build stage."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from app.cli import build_parser
from app.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
SINK = "app/services/mail/sink.py"


def dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text()


def test_every_base_image_is_pinned_by_digest() -> None:
    bases = re.findall(r"^FROM\s+(\S+)", dockerfile(), re.MULTILINE)
    assert bases
    for base in bases:
        assert re.fullmatch(r"python:3\.11-slim@sha256:[0-9a-f]{64}", base), base


def test_dependencies_install_only_from_the_locks_hashes() -> None:
    assert "pip install --no-cache-dir --require-hashes --no-deps -r /tmp/requirements.lock" in (
        dockerfile()
    )
    requirements = re.split(r"(?<!\\)\n", (ROOT / "requirements.lock").read_text())
    pins = [line for line in requirements if line.strip() and not line.startswith("#")]
    assert len(pins) > 20
    for pin in pins:
        assert re.match(r"^[A-Za-z0-9_.-]+==\S+ \\\n", pin), pin
        assert re.search(r"--hash=sha256:[0-9a-f]{64}", pin), pin


def test_the_health_check_asks_the_port_the_server_listens_on() -> None:
    text = dockerfile()
    healthcheck = text[text.index("HEALTHCHECK") :].split("\n\n", 1)[0]
    assert "Settings().port" in healthcheck and "8000" not in healthcheck
    cmd = re.search(r"^CMD (.+)$", text, re.MULTILINE)
    assert cmd is not None and "--port" not in cmd.group(1)
    assert "ROAMSIGN_PORT=8000" in text
    assert build_parser().parse_args(["serve"]).port is None  # serve falls back to the setting


@pytest.mark.parametrize("port", ["8000", "9123"])
def test_the_port_setting(port: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROAMSIGN_PORT", port)
    assert Settings().port == int(port)


def test_the_demo_mail_sink_stays_out_of_the_image() -> None:
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert SINK in ignored


def test_nothing_the_image_runs_imports_the_mail_sink() -> None:
    importers = []
    for path in (ROOT / "app").rglob("*.py"):
        if path.relative_to(ROOT).as_posix() == SINK:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                module = _absolute(path, node.module or "", node.level)
                names = [module, *(f"{module}.{alias.name}" for alias in node.names)]
            if any(name == "app.services.mail.sink" for name in names):
                importers.append(str(path.relative_to(ROOT)))
    assert importers == []


def _absolute(path: Path, module: str, level: int) -> str:
    if not level:
        return module
    package = list(path.relative_to(ROOT).with_suffix("").parts[:-1])
    base = package[: len(package) - (level - 1)]
    return ".".join([*base, module] if module else base)


def test_the_image_serves_swagger_ui_vendored_by_its_web_stage() -> None:
    text = dockerfile()
    assert "RUN bash scripts/vendor-web.sh" in text
    assert "COPY --from=web /src/app/static/vendor/ app/static/vendor/" in text
    # Only the pinned, checked copy: never whatever a developer has under app/static/vendor.
    assert "app/static/vendor" in (ROOT / ".dockerignore").read_text().splitlines()
