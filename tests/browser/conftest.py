"""Browser tests: headless Chromium from Debian (scripts/ensure-chromium.sh), driven by
Playwright, against one real `python -m app serve` per module (tests/harness.py) on the test
database, with a real SMTP sink.

Every request the browser makes to a host other than the server is refused and recorded
(`Browsing.external`): the pages must work on a network without the internet. A failed test
leaves a screenshot of each page it had open under var/artifacts/browser/.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, Route, sync_playwright
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from app.clock import SystemClock
from app.db import make_sessionmaker
from app.runtime import Runtime
from app.services.mail.sink import MailSink
from app.settings import Settings, write_master_key
from tests.conftest import wipe
from tests.factories import Factory
from tests.harness import PROJECT_ROOT, Server, serve, serve_environment

pytestmark = pytest.mark.browser

ARTIFACTS = PROJECT_ROOT / "var" / "artifacts" / "browser"
# Chromium as root in a container: no sandbox, no GPU, nothing that calls home. Playwright
# gives each launch a fresh profile (--user-data-dir) of its own.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str:
    found = os.environ.get("ROAMSIGN_CHROMIUM") or shutil.which("chromium")
    if not found:
        pytest.fail("no Chromium: run scripts/ensure-chromium.sh (make test does)")
    return found


@dataclass
class Site:
    """The server under test, the SMTP sink it mails to, and a factory on its database."""

    server: Server
    sink: MailSink
    factory: Factory
    settings: Settings
    sessions: sessionmaker[Session]

    @property
    def url(self) -> str:
        return self.server.url


@pytest.fixture(scope="module")
def site(
    tmp_path_factory: pytest.TempPathFactory, database_url: str, engine: Engine, master_key: bytes
) -> Iterator[Site]:
    var_dir = tmp_path_factory.mktemp("browser")
    key_file = var_dir / "master.key"
    write_master_key(key_file, master_key)
    with MailSink(var_dir / "mail") as sink:
        settings = Settings(
            profile="production",
            database_url=database_url,
            master_key_file=key_file,
            var_dir=var_dir,
            smtp_host="127.0.0.1",
            smtp_port=sink.port,
        )
        runtime = Runtime.build(settings, SystemClock())
        runtime.engine.dispose()
        sessions = make_sessionmaker(engine)
        runtime.engine, runtime.sessions = engine, sessions
        factory = Factory(runtime)
        factory.init_ca()
        env = serve_environment(
            database_url=database_url,
            key_file=key_file,
            var_dir=var_dir,
            smtp_port=sink.port,
            ROAMSIGN_DELIVERY_POLL_SECONDS="0.2",
        )
        server = serve(env, var_dir, ready_seconds=30)
        try:
            yield Site(server, sink, factory, settings, sessions)
        finally:
            server.stop()
            wipe(engine)


# Package scope, not session: Playwright's sync API runs an event loop in this thread while it
# lives, and the asyncio tests collected after tests/browser/ cannot start theirs beside it.
@pytest.fixture(scope="package")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="package")
def browser(playwright: Playwright) -> Iterator[Browser]:
    browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
    yield browser
    browser.close()


@dataclass
class Browsing:
    """One browser context (its own cookies): the pages opened in it and the requests it was
    refused for going elsewhere than the server."""

    context: BrowserContext
    base_url: str
    external: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)

    def new_page(self) -> Page:
        page = self.context.new_page()
        page.on(
            "console",
            lambda message: (
                self.console_errors.append(message.text) if message.type == "error" else None
            ),
        )
        return page


@pytest.fixture
def browsing(browser: Browser, site: Site, request: pytest.FixtureRequest) -> Iterator[Browsing]:
    context = browser.new_context(base_url=site.url, viewport={"width": 1280, "height": 900})
    browsing = Browsing(context, site.url)

    def only_the_server(route: Route) -> None:
        if route.request.url.startswith(site.url):
            route.continue_()
        else:
            browsing.external.append(route.request.url)
            route.abort()

    context.route("**/*", only_the_server)
    yield browsing
    report = getattr(request.node, "outcome_call", None)
    if report is not None and report.failed:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", request.node.name)
        for number, page in enumerate(context.pages):
            page.screenshot(path=str(ARTIFACTS / f"{name}-{number}.png"), full_page=True)
    context.close()


@pytest.fixture
def page(browsing: Browsing) -> Page:
    return browsing.new_page()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> object:
    report = yield
    if report.when == "call":
        item.outcome_call = report  # type: ignore[attr-defined]
    return report


LINK_LINE = re.compile(r"^Pautan / Link: https?://[^/\s]+(/\S+)\r?$", re.MULTILINE)


def mail_text(message: EmailMessage) -> str:
    body = message.get_body(preferencelist=("plain",))
    assert body is not None
    return str(body.get_content())


def link_in_mail(site: Site, recipient: str, subject_part: str, timeout: float = 15) -> str:
    """The page link (path and fragment) of the newest e-mail to `recipient` whose subject
    has `subject_part`, once the server has delivered it to the sink."""
    message = site.sink.wait_for(
        lambda m: recipient in str(m["To"]) and subject_part in str(m["Subject"]),
        timeout=timeout,
    )
    match = LINK_LINE.search(mail_text(message))
    assert match, f"no link in the e-mail {message['Subject']!r}"
    return match.group(1)
