"""`app.deps.json_body` refuses a body exactly as FastAPI refuses a body parameter.

The signing routes parse their JSON body in a dependency (`app.deps.JsonBody`, on the one
thread hop of `app.routing.OneUnitRoute`); a caller must not be able to tell: the same status,
code, detail and pointers for every bad body.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request

from app.deps import json_body
from app.main import install_error_handlers
from app.schemas.signing import SignatureSubmit, SigningRequestCreate

BAD_BODIES = [
    b"",
    b"null",
    b"{",
    b"not json",
    b'{"otp": "123456",}',
    b"[]",
    b'"a string"',
    b"42",
    b"{}",
    b'{"otp": 123456, "pin": "135792"}',
    b'{"otp": "123456", "pin": "135792", "extra": 1}',
    b'{"otp": "", "pin": "' + b"9" * 17 + b'"}',
    b'{"otp": "\xff\xfe", "pin": "135792"}',
    b"\xef\xbb\xbf\xff",
    b'{"otp": "1\\ud800", "pin": "135792"}',
    b"[" * 5000 + b"]" * 5000,
    b'{"otp": ' + b'{"a": ' * 5000 + b"1" + b"}" * 5001,
    b'{"mykad": "850101-14-5555", "document_hash": "zz", "document_name": ""}',
    b'{"mykad": "850101145555", "document_hash": "ab", "hash_algorithm": "md5"}',
    b'{"document_hash": "' + b"a" * 64 + b'", "hash_algorithm": "sha256", "channel": "fax"}',
]


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    install_error_handlers(app)

    @app.post("/fastapi/signature")
    def by_fastapi_signature(body: SignatureSubmit) -> dict[str, Any]:
        return body.model_dump()

    @app.post("/ours/signature")
    async def by_json_body_signature(request: Request) -> dict[str, Any]:
        return json_body(SignatureSubmit, await request.body()).model_dump()

    @app.post("/fastapi/create")
    def by_fastapi_create(body: SigningRequestCreate) -> dict[str, Any]:
        return body.model_dump()

    @app.post("/ours/create")
    async def by_json_body_create(request: Request) -> dict[str, Any]:
        return json_body(SigningRequestCreate, await request.body()).model_dump()

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://parity.test") as client:
        yield client


@pytest.mark.parametrize("route", ["signature", "create"])
@pytest.mark.parametrize("content", BAD_BODIES)
async def test_a_bad_body_is_refused_as_fastapi_refuses_it(
    client: httpx.AsyncClient, route: str, content: bytes
) -> None:
    headers = {"Content-Type": "application/json"}
    expected = await client.post(f"/fastapi/{route}", content=content, headers=headers)
    ours = await client.post(f"/ours/{route}", content=content, headers=headers)
    assert expected.status_code in {400, 422}, expected.text
    assert (ours.status_code, ours.headers["content-type"], ours.json()) == (
        expected.status_code,
        expected.headers["content-type"],
        expected.json(),
    )


async def test_a_good_body_is_the_same_model(client: httpx.AsyncClient) -> None:
    body = {"otp": "123456", "pin": "135792"}
    expected = await client.post("/fastapi/signature", json=body)
    ours = await client.post("/ours/signature", json=body)
    assert expected.status_code == ours.status_code == 200
    assert ours.json() == expected.json() == body
