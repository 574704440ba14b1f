"""The rules every request body meets before a route sees it: JSON, an object, 64 KiB, sane depth
and numbers, no unknown field."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.api.conftest import (
    MYKAD,
    Keys,
    assert_problem,
    create_user,
    get_user,
    post_raw,
    request_otp,
    user_body,
)
from tests.factories import Person


@pytest.mark.parametrize(
    "content",
    [b'{"mykad": ', b"{'mykad': '850101145555'}", b'{"mykad": "1",}', b"not json", b"{"],
)
async def test_malformed_json_is_400(
    client: httpx.AsyncClient, api_keys: Keys, content: bytes
) -> None:
    assert_problem(await post_raw(client, api_keys.jdn_admin, content), 400, "bad_request")


@pytest.mark.parametrize(
    "content",
    [
        b'{"mykad": "\xff\xfe", "name": "Aisyah", "agency": "JDN"}',
        b'{"mykad": "850101145555", "name": "Ais\xc3yah", "agency": "JDN"}',
        b"\xef\xbb\xbf\xff",
    ],
)
async def test_invalid_utf8_is_a_client_error(
    client: httpx.AsyncClient, api_keys: Keys, content: bytes
) -> None:
    response = await post_raw(client, api_keys.jdn_admin, content)
    assert response.status_code in {400, 422}, response.text
    assert_problem(response, response.status_code)


async def test_a_lone_surrogate_is_refused_not_a_500(
    client: httpx.AsyncClient, api_keys: Keys
) -> None:
    content = b'{"mykad": "850101145555", "name": "Ais\\ud800yah", "agency": "JDN"}'
    response = await post_raw(client, api_keys.jdn_admin, content)
    assert response.status_code in {400, 422}, response.text
    assert_problem(response, response.status_code)


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
async def test_a_body_that_is_not_json_is_415(
    client: httpx.AsyncClient, api_keys: Keys, content_type: str | None
) -> None:
    content = json.dumps(user_body()).encode()
    response = await post_raw(client, api_keys.jdn_admin, content, content_type)
    assert_problem(response, 415, "unsupported_media_type")


@pytest.mark.parametrize(
    "content_type",
    ["application/json; charset=utf-8", "APPLICATION/JSON", "application/merge-patch+json"],
)
async def test_json_media_types_are_accepted(
    client: httpx.AsyncClient, api_keys: Keys, content_type: str
) -> None:
    content = json.dumps(user_body()).encode()
    response = await post_raw(client, api_keys.jdn_admin, content, content_type)
    assert response.status_code == 201, response.text


async def test_a_body_over_64_kib_is_413(client: httpx.AsyncClient, api_keys: Keys) -> None:
    content = json.dumps(user_body(name="a" * 70 * 1024)).encode()
    response = await post_raw(client, api_keys.jdn_admin, content)
    assert_problem(response, 413, "payload_too_large")


async def test_the_limit_holds_before_authentication(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/signing-requests",
        content=b" " * (70 * 1024),
        headers={"Content-Type": "application/json"},
    )
    assert_problem(response, 413, "payload_too_large")


async def chunked(data: bytes, size: int = 1024) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def test_a_chunked_body_over_64_kib_is_413(client: httpx.AsyncClient, api_keys: Keys) -> None:
    data = json.dumps(user_body(name="a" * 70 * 1024)).encode()
    response = await post_raw(client, api_keys.jdn_admin, chunked(data))
    assert "content-length" not in response.request.headers
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert_problem(response, 413, "payload_too_large")
    assert (await get_user(client, api_keys.jdn_admin)).status_code == 404


async def test_a_chunked_body_under_the_limit_is_read_whole(
    client: httpx.AsyncClient, api_keys: Keys
) -> None:
    data = json.dumps(user_body()).encode()
    response = await post_raw(client, api_keys.jdn_admin, chunked(data, size=7))
    assert "content-length" not in response.request.headers
    assert response.status_code == 201, response.text
    assert response.json()["mykad"] == MYKAD


async def test_a_body_of_exactly_64_kib_is_not_refused_for_size(
    client: httpx.AsyncClient, api_keys: Keys
) -> None:
    base = json.dumps(user_body()).encode()
    content = base[:-1] + b" " * (64 * 1024 - len(base)) + b"}"
    assert len(content) == 64 * 1024
    response = await post_raw(client, api_keys.jdn_admin, content)
    assert response.status_code == 201, response.text


async def test_an_unknown_field_is_422_naming_it(client: httpx.AsyncClient, api_keys: Keys) -> None:
    response = await create_user(client, api_keys.jdn_admin, nickname="Aisyah")
    body = assert_problem(response, 422, "validation_error")
    assert "/nickname" in [error["pointer"] for error in body["errors"]]
    assert all(error["detail"] for error in body["errors"])
    assert (await get_user(client, api_keys.jdn_admin)).status_code == 404  # nothing created


@pytest.mark.parametrize("content", [b"", b"null", b"[]", b'"850101145555"', b"42"])
async def test_a_body_that_is_not_an_object_is_422(
    client: httpx.AsyncClient, api_keys: Keys, content: bytes
) -> None:
    assert_problem(await post_raw(client, api_keys.jdn_admin, content), 422, "validation_error")


@pytest.mark.parametrize(
    "content",
    [
        b"[" * 30000 + b"]" * 30000,
        b'{"a":' * 10000 + b"1" + b"}" * 10000,
        b'{"mykad": ' + b"[" * 30000 + b"]" * 30000 + b"}",
        b'{"name": ' + b"[" * 500 + b"]" * 500 + b', "mykad": "850101145555", "agency": "JDN"}',
    ],
    ids=["lists", "objects", "in-a-field", "parseable"],
)
async def test_deep_json_is_a_client_error(
    client: httpx.AsyncClient, api_keys: Keys, content: bytes
) -> None:
    assert len(content) <= 64 * 1024
    response = await post_raw(client, api_keys.jdn_admin, content)
    assert 400 <= response.status_code < 500, response.text
    assert_problem(response, response.status_code)


DEEP_BODIES = [
    b"[" * 30000 + b"]" * 30000,
    b'{"a":' * 10000 + b"1" + b"}" * 10000,
    b'{"otp": ' + b"[" * 3000 + b"]" * 3000 + b', "pin": "135792"}',
    b'{"otp": "123456", "pin": ' + b'{"a": ' * 65 + b"1" + b"}" * 66,
]


@pytest.mark.parametrize("content", DEEP_BODIES, ids=["lists", "objects", "in-a-field", "65"])
async def test_deep_json_is_400_on_every_kind_of_route(
    client: httpx.AsyncClient, api_keys: Keys, person: Person, content: bytes
) -> None:
    """json.loads raises RecursionError near a thousand levels: the body rule refuses deep
    nesting before any parser, on native, signing (own body parsing) and CSC routes alike."""
    created = await request_otp(client, api_keys.signer, person)
    assert created.status_code == 201, created.text
    for key, path in [
        (api_keys.jdn_admin, "/v1/users"),
        (api_keys.signer, "/v1/signing-requests"),
        (api_keys.signer, f"/v1/signing-requests/{created.json()['id']}/signature"),
    ]:
        response = await post_raw(client, key, content, path=path)
        body = assert_problem(response, 400, "bad_request")
        assert "nested deeper than 64" in body["detail"]
    response = await post_raw(client, api_keys.signer, content, path="/csc/v2/signatures/signHash")
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_request"
    assert "nested deeper than 64" in response.json()["error_description"]


async def test_json_nested_64_deep_reaches_the_route(
    client: httpx.AsyncClient, api_keys: Keys
) -> None:
    content = b'{"mykad": "850101145555", "x": ' + b"[" * 63 + b"]" * 63 + b"}"
    assert_problem(await post_raw(client, api_keys.jdn_admin, content), 422, "validation_error")


async def test_brackets_inside_strings_are_not_nesting(
    client: httpx.AsyncClient, api_keys: Keys
) -> None:
    name = "[" * 100 + '\\"{' * 100
    content = json.dumps(user_body(name=name)).encode()
    response = await post_raw(client, api_keys.jdn_admin, content)
    assert response.status_code != 400, response.text


async def test_very_deep_json_is_413(client: httpx.AsyncClient, api_keys: Keys) -> None:
    content = b"[" * 100000 + b"]" * 100000
    assert_problem(await post_raw(client, api_keys.jdn_admin, content), 413, "payload_too_large")


@pytest.mark.parametrize(
    "number",
    [b"1" + b"0" * 400, b"1" + b"0" * 5000, b"1e400", b"-1e400", b"NaN", b"Infinity"],
    ids=["10**400", "10**5000", "1e400", "-1e400", "NaN", "Infinity"],
)
async def test_huge_numbers_are_a_client_error(
    client: httpx.AsyncClient, api_keys: Keys, number: bytes
) -> None:
    for content in (
        b'{"mykad": ' + number + b', "name": "Aisyah", "agency": "JDN"}',
        b'{"mykad": "850101145555", "name": "Aisyah", "agency": "JDN", "age": ' + number + b"}",
    ):
        response = await post_raw(client, api_keys.jdn_admin, content)
        assert 400 <= response.status_code < 500, response.text
        assert_problem(response, response.status_code)
    assert (await get_user(client, api_keys.jdn_admin)).status_code == 404
