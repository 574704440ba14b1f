"""app.routing.OneUnitDispatch: the one-unit routes' requests skip the router, and the table
never takes a request the router would give to another route."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import _IncludedRouter, iter_route_contexts
from starlette.routing import BaseRoute, Match

from app.main import create_app
from app.routing import OneUnitDispatch, OneUnitRoute, _Table
from app.runtime import Runtime
from tests.api.conftest import bearer, request_otp
from tests.factories import Person

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def router_choice(routes: list[BaseRoute], scope: dict[str, Any]) -> BaseRoute | None:
    """The route FastAPI's router runs for `scope` (its first full match, else a partial)."""
    partial = None
    for route in routes:
        chosen: Any = route
        if isinstance(route, _IncludedRouter):
            match, _, chosen, _ = route._match(scope)
            while isinstance(chosen, _IncludedRouter):
                match, _, chosen, _ = chosen._match(scope)
        else:
            match, _ = route.matches(scope)
        if match == Match.FULL:
            return chosen  # type: ignore[no-any-return]
        if match == Match.PARTIAL and partial is None:
            partial = chosen
    return partial


def sample_paths(app: FastAPI) -> set[str]:
    paths = set()
    for context in iter_route_contexts(app.routes):
        path = str(context.path)
        paths.add(re.sub(r"\{[^}]+\}", "abc", path))
        paths.add(re.sub(r"\{[^}]+\}", "abc", path) + "/x")
        paths.add(re.sub(r"\{[^}:]+(:path)?\}", "a/b", path))
    return paths


def test_the_table_takes_only_what_the_router_gives_a_one_unit_route(runtime: Runtime) -> None:
    app = create_app(runtime=runtime, background_workers=False)
    table = _Table.of(app)
    assert {entry.route.path for entry, _ in table.candidates if entry.route} >= {
        "/v1/signing-requests",
        "/v1/signing-requests/{request_id}/signature",
    }
    taken = 0
    for path in sorted(sample_paths(app)):
        for method in METHODS:
            scope = {"type": "http", "method": method, "path": path, "root_path": ""}
            found = table.find(method, path)
            expected = router_choice(app.router.routes, scope)
            if found is not None:
                taken += 1
                assert found[0] is expected, (method, path)
            elif isinstance(expected, OneUnitRoute) and method in (expected.methods or ()):
                # Deferring is always safe; but a one-unit route's own path is taken.
                pytest.fail(f"{method} {path}: {expected.path} not taken")
    assert taken >= 5


def test_a_route_before_a_one_unit_route_keeps_its_requests(runtime: Runtime) -> None:
    app = create_app(runtime=runtime, background_workers=False)

    @app.post("/v1/signing-requests/{request_id}/signature-status")
    async def earlier() -> None:  # pragma: no cover - never called
        return None

    # Moved before every other route: the table must defer to it for its own path.
    app.router.routes.insert(0, app.router.routes.pop())
    table = _Table.of(app)
    assert table.find("POST", "/v1/signing-requests/abc/signature-status") is None
    assert table.find("POST", "/v1/signing-requests/abc/signature") is not None


async def test_the_flow_runs_through_the_table(
    runtime: Runtime, person: Person, api_keys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    taken: list[str] = []
    find = _Table.find

    def spy(self: _Table, method: str, path: str) -> Any:
        found = find(self, method, path)
        if found is not None:
            taken.append(found[0].path)
        return found

    monkeypatch.setattr(_Table, "find", spy)
    app = create_app(runtime=runtime, background_workers=False)
    assert any(middleware.cls is OneUnitDispatch for middleware in app.user_middleware)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://roamsign.test") as client:
        created = await request_otp(client, api_keys.signer, person)
        assert created.status_code == 201, created.text
        missing = await client.post(
            "/v1/signing-requests/nope/signature",
            json={"otp": "123456", "pin": "123456"},
            headers=bearer(api_keys.signer),
        )
        assert missing.status_code == 404
        assert missing.headers["content-type"] == "application/problem+json"
    assert taken == ["/v1/signing-requests", "/v1/signing-requests/{request_id}/signature"]
