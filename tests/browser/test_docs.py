"""The API documentation opens on a machine without the internet: every script and style
comes from roamsign itself, and Swagger UI lists the operations."""

from __future__ import annotations

from playwright.sync_api import Page, expect

from tests.browser.conftest import Browsing


def test_the_api_documentation_lists_the_operations_without_the_internet(
    browsing: Browsing, page: Page
) -> None:
    page.goto("/docs")
    operations = page.locator(".opblock")
    expect(operations.first).to_be_visible(timeout=15_000)
    assert operations.count() > 20
    expect(
        page.locator(".opblock-summary-path", has_text="/v1/signing-requests").first
    ).to_be_visible()
    assert browsing.external == []
    assert browsing.console_errors == []


def test_fastapi_s_cdn_pages_are_gone(page: Page) -> None:
    answer = page.goto("/redoc")
    assert answer is not None and answer.status == 404
