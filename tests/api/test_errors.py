"""Failures outside any route's own rules, rendered as problems: unknown paths, wrong methods,
an unexpected error."""

from __future__ import annotations

import httpx
import pytest

from app.main import create_app
from app.runtime import Runtime
from tests.api.conftest import JsonLines, Keys, assert_problem, bearer, user_body


async def test_an_unknown_path_is_a_404_problem(client: httpx.AsyncClient, api_keys: Keys) -> None:
    for path in ("/v1/nothing-here", "/", "/v2/users/850101145555"):
        assert_problem(await client.get(path), 404, "not_found")
    response = await client.get("/v1/nothing-here", headers=bearer(api_keys.signer))
    assert_problem(response, 404, "not_found")


async def test_a_wrong_method_is_a_405_problem(client: httpx.AsyncClient, api_keys: Keys) -> None:
    response = await client.delete("/healthz")
    assert_problem(response, 405)
    assert "GET" in response.headers["allow"]
    response = await client.put("/v1/users", json=user_body(), headers=bearer(api_keys.jdn_admin))
    assert_problem(response, 405)
    assert "POST" in response.headers["allow"]


@pytest.mark.parametrize(
    ("path", "methods"),
    [
        ("/v1/users/850101145555", {"GET", "PATCH"}),
        ("/v1/users/850101145555/credentials", {"GET", "POST"}),
        ("/v1/signing-requests/some-id", {"GET", "DELETE"}),
        ("/v1/devices/some-id", {"DELETE"}),
    ],
)
async def test_a_405_allows_every_method_of_the_resource(
    client: httpx.AsyncClient, api_keys: Keys, path: str, methods: set[str]
) -> None:
    """RFC 9110 s.15.5.6: Allow lists the resource's methods, not only one route's."""
    response = await client.options(path, headers=bearer(api_keys.jdn_admin))
    assert_problem(response, 405, "method_not_allowed")
    assert {method.strip() for method in response.headers["allow"].split(",")} == methods


async def test_an_unexpected_error_is_a_500_problem_logged_with_the_request_id(
    runtime: Runtime, json_log: JsonLines
) -> None:
    app = create_app(runtime=runtime, background_workers=False)

    async def explode() -> None:
        raise RuntimeError("the secret detail 850101145555")

    app.add_api_route("/explode", explode)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://roamsign.test") as client:
        response = await client.get("/explode", headers={"X-Request-Id": "trace-500-0001"})
        generated = await client.get("/explode")
    assert_problem(response, 500, "internal_error")
    assert "secret detail" not in response.text
    assert response.headers["x-request-id"] == "trace-500-0001"
    assert_problem(generated, 500, "internal_error")

    failures = json_log.entries("roamsign.app")
    assert [entry["event"] for entry in failures] == ["request.failed"] * 2
    assert [entry["request_id"] for entry in failures] == [
        "trace-500-0001",
        generated.headers["x-request-id"],
    ]
    assert "RuntimeError" in failures[0]["exception"]
    assert "850101145555" not in "".join(json_log.lines)
    access = json_log.entries("roamsign.access")
    assert [(entry["status"], entry["request_id"]) for entry in access] == [
        (500, "trace-500-0001"),
        (500, generated.headers["x-request-id"]),
    ]
