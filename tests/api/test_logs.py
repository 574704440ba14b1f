"""Logs: identifiers masked, in the access log too."""

from __future__ import annotations

import logging

import httpx
import pytest

from app.logs import JsonFormatter, mask_identifiers
from tests.api.conftest import MYKAD, MYKAD_DASHED, JsonLines, Keys, get_user
from tests.factories import Factory


def test_mask_identifiers() -> None:
    assert mask_identifiers("GET /v1/users/850101-14-5555") == "GET /v1/users/********5555"
    assert mask_identifiers('{"mykad": "850101145555"}') == '{"mykad": "********5555"}'
    assert mask_identifiers("850101145555,900101140001") == "********5555,********0001"
    # Not MyKad-shaped: other lengths and the E.164 phone stay as they are.
    assert mask_identifiers("8501011455556") == "8501011455556"
    assert mask_identifiers("+60123456789") == "+60123456789"


async def test_the_access_log_masks_the_mykad(
    client: httpx.AsyncClient,
    api_keys: Keys,
    factory: Factory,
    caplog: pytest.LogCaptureFixture,
    json_log: JsonLines,
) -> None:
    factory.person(mykad=MYKAD, roaming=False)
    caplog.set_level(logging.DEBUG)
    response = await get_user(client, api_keys.portal, MYKAD_DASHED)
    assert response.status_code == 200
    missing = await get_user(client, api_keys.portal, "991231-01-9999")
    assert missing.status_code == 404

    assert any(record.name == "roamsign.access" for record in caplog.records)
    captured = [JsonFormatter().format(record) for record in caplog.records]
    for line in captured + json_log.lines:
        assert MYKAD not in line
        assert MYKAD_DASHED not in line
        assert "991231019999" not in line
        assert "991231-01-9999" not in line
    access = json_log.entries("roamsign.access")
    assert [(entry["path"], entry["status"]) for entry in access] == [
        ("/v1/users/********5555", 200),
        ("/v1/users/********9999", 404),
    ]
    assert access[0]["request_id"] == response.headers["x-request-id"]
    assert access[0]["caller"] == "portal"
    assert access[0]["method"] == "GET"
