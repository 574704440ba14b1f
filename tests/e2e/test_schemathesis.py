"""schemathesis against openapi.yaml (the file: the contract) on a live `python -m app serve`.

Every operation of the document is fuzzed with a bounded number of examples: the examples
phase, the deterministic coverage phase (boundary and negative values of every parameter and
body member, one unexpected method), then `FUZZ_EXAMPLES` generated cases, positive and
negative. Each case carries the Bearer key of the role its `security` scopes name, against
one server and one database holding callers of every role and the person of the document's
example MyKad with an active roaming credential. Device calls (RFC 9421) go unsigned: they
are fuzzed up to their 401; tests/api/test_devices_signatures.py covers signed ones.

Checks: schemathesis' own (no 5xx, documented status codes, content types and headers, bodies
in the schema, schema-violating requests refused, the 405's Allow header, `ignored_auth`,
`use_after_free`, `ensure_resource_availability`) and ours: every native error is an RFC 9457
problem with a `code` (CSC paths: the CSC error shape), and object-level authorization: any
2xx on an object is replayed as the owner's peer (another signer; the administrator of
another agency), and `test_another_callers_objects_are_not_found` sends generated calls
for real objects (a signing request, a credential, a person, an application) as that peer:
the answer must be the one for an id that does not exist, and nothing may change.
`positive_data_acceptance` stays off: the contract refuses schema-valid input that breaks rules
a JSON Schema cannot carry (a MyKad's date, device eligibility, CSC `invalid_request`) with a
documented 4xx. The document's links (signing request -> GET/DELETE/signature, application ->
follow-ups) are checked in tests/api/test_openapi.py; schemathesis' state machine over them
reached no real object here (a new signing request needs the one existing person's MyKad), so
the object-level test drives real objects itself.

Deterministic: derandomized generation, a fixed seed, no example database. About 1,800
checked requests in 35-65 s on this 2-core machine (the higher figure under load), the
same on SQLite and PostgreSQL; the last test prints the figures.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import hypothesis
import pytest
import schemathesis
from schemathesis import Case, CheckContext, Response
from sqlalchemy import Engine

from app.clock import SystemClock
from app.db import make_sessionmaker
from app.runtime import Runtime
from app.services.mail.sink import MailSink
from tests.conftest import wipe
from tests.e2e.conftest import Server, Servers, make_e2e_settings
from tests.factories import Factory

pytestmark = pytest.mark.e2e

OPENAPI = Path(__file__).resolve().parents[2] / "openapi.yaml"
SEED = 20261127
FUZZ_EXAMPLES = 3
BOLA_EXAMPLES = 2
EXAMPLE_MYKAD = "850101145555"  # the document's own example: the examples phase finds a person
# Which key a case carries when an operation admits several roles.
ROLE_PREFERENCE = ("signer", "jdn_admin", "portal", "agency_admin")
PLACEHOLDER = "role-key-"


@dataclass
class World:
    server: Server
    keys: dict[str, str]
    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)
    probes: Counter[str] = field(default_factory=Counter)

    def role_of(self, authorization: str | None) -> str | None:
        for role, key in self.keys.items():
            if authorization == f"Bearer {key}":
                return role
        return None


class Current:
    world: World | None = None


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory, database_url: str, master_key: bytes, engine: Engine
) -> Iterator[World]:
    """One server and one database for the whole module; emptied afterwards."""
    var_dir = tmp_path_factory.mktemp("schemathesis")
    with MailSink(var_dir / "mail") as sink:
        settings = make_e2e_settings(var_dir, database_url, master_key, sink.port)
        runtime = Runtime.build(settings, SystemClock())
        runtime.engine.dispose()
        runtime.engine, runtime.sessions = engine, make_sessionmaker(engine)
        factory = Factory(runtime)
        servers = Servers(settings)
        try:
            factory.init_ca()
            keys = {
                "signer": factory.client("igfmas", "signer"),
                "other_signer": factory.client("eperolehan", "signer"),
                "portal": factory.client("portal", "portal"),
                "jdn_admin": factory.client("jdn", "jdn_admin"),
                "agency_admin": factory.client("sa-jdn", "agency_admin", "JDN"),
                "other_agency_admin": factory.client("sa-mof", "agency_admin", "MOF"),
            }
            factory.person(mykad=EXAMPLE_MYKAD, agency="JDN")
            Current.world = World(servers.start(), keys)
            yield Current.world
        finally:
            Current.world = None
            servers.stop()
            wipe(engine)


def roles_of(operation: Any) -> list[str]:
    security = operation.definition.raw.get("security") or [{}]
    return list(security[0].get("apiKey", []))


CONFIG = schemathesis.Config.from_dict(
    {
        "seed": SEED,
        "generation": {
            "max-examples": FUZZ_EXAMPLES,
            "deterministic": True,
            "mode": "all",
            "database": "none",
        },
        "checks": {"positive_data_acceptance": {"enabled": False}},
        # The coverage phase's negative values (every member's wrong types, bounds, formats)
        # and one unexpected method (the 405 and its Allow header); the fuzzing phase adds
        # positive and negative cases. Its positive boundary values and six more methods per
        # operation would cost a third more time for what the other phases already cover.
        "phases": {
            "coverage": {"unexpected-methods": ["OPTIONS"], "generation": {"mode": "negative"}}
        },
    }
)
schema = schemathesis.openapi.from_path(OPENAPI, config=CONFIG)


@schemathesis.serializer("application/timestamp-query", "application/ocsp-request")
def der_body(_context: schemathesis.SerializationContext, value: Any) -> dict[str, Any]:
    """The PKI protocols' DER bodies (POST /v1/tsa, /v1/ca/ocsp): whatever bytes were made."""
    data = value if isinstance(value, bytes) else str(value).encode()
    return {"data": data}


@schema.auth(refresh_interval=None)
class RoleKey:
    """The role an operation admits, as a placeholder: coverage cases are made at collection,
    before the server and its keys exist; `with_real_key` swaps in the key before the call."""

    def get(self, case: Case, context: Any) -> str | None:
        roles = roles_of(case.operation)
        preferred = next((role for role in ROLE_PREFERENCE if role in roles), None)
        return PLACEHOLDER + preferred if preferred else None

    def set(self, case: Case, data: str, context: Any) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


def with_real_key(case: Case, world: World) -> None:
    given = (case.headers or {}).get("Authorization", "")
    if given.startswith("Bearer " + PLACEHOLDER):
        case.headers["Authorization"] = f"Bearer {world.keys[given.split(PLACEHOLDER)[1]]}"


def error_shape(ctx: CheckContext, response: Response, case: Case) -> bool | None:
    """Every native error is an RFC 9457 problem with a stable code; CSC errors are CSC's."""
    if response.status_code < 400:
        return None
    media_type = response.headers.get("content-type", [""])[0].split(";")[0].strip()
    body = response.json()
    if case.operation.path.startswith("/csc/"):
        assert media_type == "application/json", media_type
        assert set(body) == {"error", "error_description"}, body
        assert isinstance(body["error"], str) and body["error"], body
        return None
    assert media_type == "application/problem+json", media_type
    assert body["status"] == response.status_code, body
    for member in ("type", "title", "detail", "code"):
        assert isinstance(body.get(member), str) and body[member], (member, body)
    return None


def object_level_authorization(ctx: CheckContext, response: Response, case: Case) -> bool | None:
    """A resource the caller may not see is 404 (contract): replay each 2xx on an object
    (an operation with a path parameter) as the owner's peer."""
    world = Current.world
    assert world is not None
    world.statuses[(case.operation.label, response.status_code)] += 1
    if not 200 <= response.status_code < 300 or not case.operation.path_parameters:
        return None
    roles = roles_of(case.operation)
    sent_as = world.role_of(response.request.headers.get("Authorization"))
    if sent_as == "signer":
        peer, refusals = "other_signer", {404}
    elif sent_as is not None and "agency_admin" in roles:
        peer, refusals = "other_agency_admin", {403, 404}
    else:
        return None
    request = response.request
    headers = {
        name: value
        for name, value in request.headers.items()
        if name.lower() not in {"authorization", "content-length", "host"}
    }
    headers["Authorization"] = f"Bearer {world.keys[peer]}"
    assert request.url is not None and request.method is not None
    replay = httpx.request(
        request.method, request.url, headers=headers, content=request.body, timeout=30
    )
    world.probes[case.operation.label] += 1
    assert replay.status_code in refusals, (
        f"{peer} got {replay.status_code} for {request.method} {request.url} "
        f"(owner {sent_as} got {response.status_code}): {replay.text[:300]}"
    )
    return None


CHECKS = [error_shape, object_level_authorization]


@schema.parametrize()
@hypothesis.settings(deadline=None, derandomize=True, database=None)
def test_every_operation_holds_to_openapi_yaml(case: Case, world: World) -> None:
    with_real_key(case, world)
    case.call_and_validate(base_url=world.server.url, additional_checks=CHECKS)


# Objects of the module's world, and who owns them: a caller who is not the owner (another
# signer; the administrator of another agency) must get the same answer for them as for an id
# that does not exist, a 404 where the call needs no body.
OWNED_PARAMETERS = ("request_id", "mykad", "credential_id", "application_id")
UNKNOWN = {
    "request_id": "00000000-0000-4000-8000-000000000000",
    "mykad": "991231019999",
    "credential_id": "00000000-0000-4000-8000-000000000000",
    "application_id": "00000000-0000-4000-8000-000000000000",
}


@dataclass
class Objects:
    ids: dict[str, str]


@pytest.fixture(scope="module")
def objects(world: World) -> Objects:
    with world.server.client(world.keys["signer"]) as signer:
        created = signer.post(
            "/v1/signing-requests",
            json={
                "mykad": EXAMPLE_MYKAD,
                "document_hash": hashlib.sha256(b"object-level probes").hexdigest(),
                "document_name": "Baucar Bayaran PV-2026-000123",
            },
        )
        assert created.status_code == 201, created.text
    with world.server.client(world.keys["jdn_admin"]) as jdn:
        held = jdn.get(f"/v1/users/{EXAMPLE_MYKAD}/credentials").json()
        [roaming] = [credential for credential in held if credential["medium"] == "roaming"]
        applicant = jdn.post(
            "/v1/users",
            json={
                "mykad": "860202145556",
                "name": "Ali",
                "email": "ali@jdn.gov.my",
                "agency": "JDN",
            },
        )
        assert applicant.status_code == 201, applicant.text
        application = jdn.post("/v1/users/860202145556/roaming-applications")
        assert application.status_code == 201, application.text
    return Objects(
        ids={
            "request_id": created.json()["id"],
            "mykad": EXAMPLE_MYKAD,
            "credential_id": roaming["id"],
            "application_id": application.json()["id"],
        },
    )


def answer(response: Response | httpx.Response) -> tuple[int, str | None]:
    body = response.json() if response.content else {}
    return response.status_code, body.get("code") if isinstance(body, dict) else None


# Positive generated calls only: the question is whose object it is, not the input's form.
owned = schemathesis.openapi.from_path(
    OPENAPI,
    config=schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "generation": {
                "max-examples": BOLA_EXAMPLES,
                "deterministic": True,
                "mode": "positive",
                "database": "none",
            },
            "phases": {"coverage": {"enabled": False}},
        }
    ),
)


@owned.include(path_regex=r"\{(request_id|mykad|credential_id|application_id)\}").parametrize()
@hypothesis.settings(deadline=None, derandomize=True, database=None)
def test_another_callers_objects_are_not_found(case: Case, world: World, objects: Objects) -> None:
    """Object-level authorization on schemathesis-generated calls: the owner's object, asked
    for by a signer who did not create it or an administrator of another agency."""
    [name] = [n for n in OWNED_PARAMETERS if n in (case.path_parameters or {})]
    peer = "other_signer" if name == "request_id" else "other_agency_admin"
    case.headers = {**(case.headers or {}), "Authorization": f"Bearer {world.keys[peer]}"}
    case.path_parameters[name] = UNKNOWN[name]
    for_nothing = answer(case.call(base_url=world.server.url))
    case.path_parameters[name] = objects.ids[name]
    for_theirs = case.call(base_url=world.server.url)
    world.probes[case.operation.label] += 1
    assert answer(for_theirs) == for_nothing, (peer, case.operation.label, for_theirs.text)
    assert for_theirs.status_code in {400, 403, 404, 405, 413, 415, 422}, for_theirs.text
    if case.operation.method.upper() == "GET" and name != "mykad":
        assert for_theirs.status_code == 404, for_theirs.text


def test_the_fuzzing_reached_real_objects_and_changed_none(world: World, objects: Objects) -> None:
    """Not vacuous: the owners see their objects, the probes ran on every owned kind, and no
    peer's call changed the signing request (still pending) or the credential (active)."""
    with world.server.client(world.keys["signer"]) as signer:
        request = signer.get(f"/v1/signing-requests/{objects.ids['request_id']}")
        assert request.status_code == 200 and request.json()["status"] == "pending", request.text
    with world.server.client(world.keys["agency_admin"]) as agency:
        credential = agency.get(f"/v1/credentials/{objects.ids['credential_id']}")
        assert credential.status_code == 200 and credential.json()["status"] == "active"
        assert agency.get(f"/v1/users/{EXAMPLE_MYKAD}").status_code == 200
        application = agency.get(f"/v1/roaming-applications/{objects.ids['application_id']}")
        assert application.status_code == 200, application.text
    print(
        f"\nschemathesis: {sum(world.statuses.values())} checked requests, "
        f"{sum(world.probes.values())} object-level probes; statuses: "
        f"{sorted(world.statuses.items())}"
    )
    probed = " ".join(world.probes)
    for name in OWNED_PARAMETERS:
        assert "{" + name + "}" in probed, world.probes
