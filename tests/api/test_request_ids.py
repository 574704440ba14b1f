"""Every response carries a request id: the caller's when it is sane, else a new one."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.api.conftest import REQUEST_ID, Keys, create_user, get_user, post_raw


async def test_every_response_carries_a_request_id(
    client: httpx.AsyncClient, api_keys: Keys
) -> None:
    responses = [
        await client.get("/healthz"),
        await client.get("/v1/nothing-here"),
        await get_user(client, "wrong"),
        await post_raw(client, api_keys.jdn_admin, b"x" * (70 * 1024)),
        await post_raw(client, api_keys.jdn_admin, b"{}", "text/plain"),
        await post_raw(client, api_keys.jdn_admin, b"{"),
        await create_user(client, api_keys.jdn_admin),
    ]
    ids = [response.headers["x-request-id"] for response in responses]
    assert all(REQUEST_ID.fullmatch(request_id) for request_id in ids)
    assert len(set(ids)) == len(ids)


async def test_a_sane_caller_request_id_is_echoed(client: httpx.AsyncClient) -> None:
    for given in ("igfmas-PV-2026-000123", "3f2c1b0a-9e8d-4c7b-a6f5-e4d3c2b1a098", "a.b_c-d1"):
        response = await client.get("/healthz", headers={"X-Request-Id": given})
        assert response.headers["x-request-id"] == given


@pytest.mark.parametrize(
    "given",
    [
        "short",
        "x" * 65,
        "has spaces in it",
        "<script>alert(1)</script>",
        "id\u00e9\u00e9\u00e9\u00e9\u00e9",
        "abcdefgh\n",
        "abcdefgh\r\nSet-Cookie: a=b",
    ],
)
async def test_an_insane_caller_request_id_is_replaced(
    client: httpx.AsyncClient, given: str
) -> None:
    response = await client.get("/healthz", headers={b"X-Request-Id": given.encode()})
    assert response.headers["x-request-id"] != given
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-request-id"])
