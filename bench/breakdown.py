"""Where a signing flow's CPU goes: the same code paths, one process, no sockets, no SMTP.

`bench/flow.py` measures the real server; this splits the cost of one flow (OTP request, then
signature) into its layers, each measured on its own, in the same run, on one database:

1. domain + database: `SigningService.request_signature` and `.sign` called directly, each in
   its own unit of work (authentication included), as the endpoints call them;
2. the same two calls over HTTP through the application (`httpx.ASGITransport`, the real
   middleware, dependencies, validation and serialisation), minus the in-process client's own
   cost, measured against a bare ASGI application that answers at once;
3. for scale: `/healthz` and an authenticated `GET /v1/signing-requests/{id}` the same way, and
   one thread hop (`run_in_threadpool` of a function that does nothing) against one `await`,
   the way FastAPI runs every plain `def` dependency and endpoint;
4. delivery: a signing notice sent by the server's delivery worker (`Runtime.delivery_worker`,
   its audit events included) to a real SMTP sink, the claims handed over by the courier as in
   the server, in passes of one message (a quiet server) and of four (one under load). This
   is CPU time of the delivering thread only (`time.thread_time`): the sink's thread is not
   the server's work;
5. a flow's two rows (its signing request and its signature) written through the ORM's unit of
   work and as the prebuilt Core inserts the service runs, alternately, each flow in its own
   unit of work (CPU of this thread).

All other figures are CPU time of this process (`time.process_time`) per unit, under uvloop like
`python -m app serve`; medians of `--rounds` interleaved rounds. The OTP is read from the
outbox between the two calls (not counted). Nothing asserts: it prints figures.

    .venv/bin/python bench/breakdown.py [--flows 200] [--rounds 5] [--database-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

import httpx  # noqa: E402
import uvloop  # noqa: E402
from sqlalchemy import select  # noqa: E402
from starlette.concurrency import run_in_threadpool  # noqa: E402

from app.clock import SystemClock  # noqa: E402
from app.db import make_sessionmaker, unit_of_work  # noqa: E402
from app.main import create_app  # noqa: E402
from app.migrate import upgrade  # noqa: E402
from app.models import ApiClient, Signature, SigningRequest, User  # noqa: E402
from app.models.base import new_id  # noqa: E402
from app.runtime import Runtime  # noqa: E402
from app.services.clients import ClientService  # noqa: E402
from app.services.mail.courier import COURIER_KEY, Courier  # noqa: E402
from app.services.mail.notices import queue_signing_notice  # noqa: E402
from app.services.mail.sink import MailSink  # noqa: E402
from app.services.signing.service import NewSigningRequest, SigningService  # noqa: E402
from app.services.signing.statements import (  # noqa: E402
    INSERT_REQUEST,
    INSERT_SIGNATURE,
    REQUEST_COLUMNS,
)
from app.settings import Settings, write_master_key  # noqa: E402
from app.units import Services  # noqa: E402
from tests.factories import Factory, Person  # noqa: E402
from tests.helpers import document_hash, queued_otp  # noqa: E402

PEOPLE = 20
PASS_SIZES = (1, 4)  # claims per delivery pass: a quiet server, one under load
SIGNATURE_BYTES = 900  # about a detached CMS signature with its P-256 chain


class Bench:
    def __init__(self, database_url: str, var_dir: Path, smtp_port: int) -> None:
        key_file = var_dir / "master.key"
        write_master_key(key_file, secrets.token_bytes(32))
        upgrade(database_url)
        settings = Settings(
            profile="production",
            database_url=database_url,
            master_key_file=key_file,
            var_dir=var_dir,
            delivery_worker=False,
            smtp_host="127.0.0.1",
            smtp_port=smtp_port,
            log_level="WARNING",
            # Raised for the run: every round asks many OTPs for the same few people.
            otps_per_person_per_minute=1_000_000,
            otps_per_signer_person_per_minute=1_000_000,
            otps_per_signer_per_minute=1_000_000,
        )
        self.runtime = Runtime.build(settings, SystemClock())
        factory = Factory(self.runtime)
        factory.init_ca()
        self.api_key = factory.client("breakdown", "signer")
        self.people: list[Person] = [factory.person() for _ in range(PEOPLE)]
        self.app = create_app(runtime=self.runtime, background_workers=False)
        self.serial = 0

    def new_hash(self) -> str:
        self.serial += 1
        return document_hash(f"breakdown-{self.serial}-{time.time_ns()}")

    def _service(self, session: Any) -> SigningService:
        # As the endpoints get it (app.units.Services).
        return Services(self.runtime, session).signing

    def direct_flows(self, count: int) -> tuple[float, float]:
        """CPU ms per OTP request and per signature, domain + database only."""
        runtime, create_cpu, sign_cpu = self.runtime, 0.0, 0.0
        for i in range(count):
            person = self.people[i % PEOPLE]
            started = time.process_time()
            with unit_of_work(runtime.sessions) as session:
                caller = ClientService(session, runtime.audit_log(session)).authenticate(
                    self.api_key
                )
                request_id = (
                    self._service(session)
                    .request_signature(
                        caller,
                        NewSigningRequest(
                            mykad=person.mykad,
                            document_hash=self.new_hash(),
                            hash_algorithm="sha256",
                            document_name="PV-2026-000123",
                            channel="email",
                            signature_format="cms",
                        ),
                        runtime.clock.now(),
                    )
                    .id
                )
            create_cpu += time.process_time() - started
            otp = queued_otp(runtime.sessions, runtime.keys.outbox_seal, request_id)
            started = time.process_time()
            with unit_of_work(runtime.sessions) as session:
                caller = ClientService(session, runtime.audit_log(session)).authenticate(
                    self.api_key
                )
                self._service(session).sign(
                    caller, request_id, otp, person.pin, runtime.clock.now()
                )
            sign_cpu += time.process_time() - started
        return create_cpu / count * 1000, sign_cpu / count * 1000

    async def http_flows(self, client: httpx.AsyncClient, count: int) -> tuple[float, float]:
        """CPU ms per OTP request and per signature through the application (client included)."""
        create_cpu = sign_cpu = 0.0
        for i in range(count):
            person = self.people[i % PEOPLE]
            started = time.process_time()
            created = await client.post(
                "/v1/signing-requests",
                json={
                    "mykad": person.mykad,
                    "document_hash": self.new_hash(),
                    "document_name": "PV-2026-000123",
                },
            )
            create_cpu += time.process_time() - started
            request_id = created.json()["id"]
            otp = queued_otp(self.runtime.sessions, self.runtime.keys.outbox_seal, request_id)
            started = time.process_time()
            signed = await client.post(
                f"/v1/signing-requests/{request_id}/signature",
                json={"otp": otp, "pin": person.pin},
            )
            sign_cpu += time.process_time() - started
            if created.status_code != 201 or signed.status_code != 201:
                raise RuntimeError(f"flow failed: {created.text} / {signed.text}")
        return create_cpu / count * 1000, sign_cpu / count * 1000

    def flow_rows(self, count: int) -> tuple[float, float]:
        """CPU ms per flow (this thread's) to write its two rows, a signing request and its
        signature, each flow in its own unit of work: through the ORM (add and flush, as until
        session 6) and with the statements the service runs now (prebuilt Core inserts),
        alternately, so that the machine's drift touches both alike."""
        with self.runtime.sessions() as session:
            signer_id = session.scalars(select(ApiClient.id)).one()
        spent = {True: 0.0, False: 0.0}
        for i in range(count):
            person = self.people[i % PEOPLE]
            assert person.credential_id is not None
            for through_orm in (True, False) if i % 2 else (False, True):
                started = time.thread_time()
                with unit_of_work(self.runtime.sessions) as session:
                    now = self.runtime.clock.now()
                    request = SigningRequest(
                        id=new_id(),
                        signer_id=signer_id,
                        user_id=person.user_id,
                        credential_id=person.credential_id,
                        document_hash=self.new_hash(),
                        hash_algorithm="sha256",
                        document_name="PV-2026-000125",
                        channel="email",
                        destination="b***@example.gov.my",
                        signature_format="cms",
                        otp_mac=secrets.token_bytes(32),
                        status="signed",
                        attempts=1,
                        created_at=now,
                        expires_at=now,
                    )
                    signature = {
                        "id": new_id(),
                        "request_id": request.id,
                        "signature": secrets.token_bytes(SIGNATURE_BYTES),
                        "signature_format": "cms",
                        "signature_algorithm": "ecdsa-with-SHA256",
                        "certificate_serial": "01",
                        "signed_at": now,
                    }
                    if through_orm:
                        session.add(request)
                        session.flush()
                        session.add(Signature(**signature))
                        session.flush()
                    else:
                        connection = session.connection()
                        row = {column: getattr(request, column) for column in REQUEST_COLUMNS}
                        connection.execute(INSERT_REQUEST, row)
                        connection.execute(INSERT_SIGNATURE, signature)
                spent[through_orm] += time.thread_time() - started
        return spent[True] / count * 1000, spent[False] / count * 1000

    async def delivery(self, request_id: str, messages: int, per_pass: int) -> float:
        """CPU ms of the delivering thread per signing notice (of `request_id`) sent, in passes
        of `per_pass` claims handed over by the courier (queueing them is not counted)."""
        runtime = self.runtime
        courier = Courier()
        courier.bind(asyncio.get_running_loop())
        carried = make_sessionmaker(runtime.engine, info={COURIER_KEY: courier})
        worker = runtime.delivery_worker()
        with runtime.sessions() as session:
            request = session.get(SigningRequest, request_id)
            assert request is not None
            user = session.get(User, request.user_id)
            assert user is not None
        cpu, sent = 0.0, 0
        try:
            while sent < messages:
                for _ in range(per_pass):
                    with unit_of_work(carried) as session:
                        notice = queue_signing_notice(
                            session,
                            runtime.notices,
                            user,
                            request,
                            "breakdown",
                            runtime.clock.now(),
                        )
                        assert notice is not None
                await asyncio.sleep(0)  # the hand-overs' callbacks
                handed = courier.take(per_pass)
                started = time.thread_time()
                report = worker.deliver_due(per_pass, handed, claim_database=False)
                cpu += time.thread_time() - started
                if report.sent != len(handed) or len(handed) != per_pass:
                    raise RuntimeError(f"delivery pass went wrong: {report}")
                sent += report.sent
        finally:
            worker.close()
            courier.unbind()
        return cpu / sent * 1000


async def cpu_per_call(call: Callable[[], Awaitable[Any]], count: int) -> float:
    started = time.process_time()
    for _ in range(count):
        await call()
    return (time.process_time() - started) / count * 1000


async def bare_app(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
    """An ASGI application that answers at once: what the in-process client costs alone."""
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


async def nothing() -> None:
    return None


def do_nothing() -> None:
    return None


async def measure(bench: Bench, flows: int, rounds: int) -> dict[str, list[float]]:
    figures: dict[str, list[float]] = {}

    def add(name: str, value: float) -> None:
        figures.setdefault(name, []).append(value)

    headers = {"Authorization": f"Bearer {bench.api_key}"}
    async with (
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=bench.app), base_url="http://bench", headers=headers
        ) as client,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=bare_app), base_url="http://bench"
        ) as bare,
    ):
        created = await client.post(
            "/v1/signing-requests",
            json={
                "mykad": bench.people[0].mykad,
                "document_hash": bench.new_hash(),
                "document_name": "PV-2026-000124",
            },
        )
        if created.status_code != 201:
            raise RuntimeError(f"OTP request failed: {created.text}")
        request_path = f"/v1/signing-requests/{created.json()['id']}"
        # Warm-up: lazy route tables, statement caches, the CA material, the SMTP exchange.
        bench.direct_flows(20)
        await bench.http_flows(client, 20)
        for per_pass in PASS_SIZES:
            await bench.delivery(created.json()["id"], 20, per_pass)
        for _ in range(rounds):
            add("client alone (bare ASGI app)", await cpu_per_call(lambda: bare.get("/"), 500))
            add("one await", await cpu_per_call(nothing, 5000))
            add("one thread hop", await cpu_per_call(lambda: run_in_threadpool(do_nothing), 500))
            add("GET /healthz", await cpu_per_call(lambda: client.get("/healthz"), 300))
            add("GET a signing request", await cpu_per_call(lambda: client.get(request_path), 300))
            create, sign = bench.direct_flows(flows)
            add("OTP request, domain + database", create)
            add("signature, domain + database", sign)
            create, sign = await bench.http_flows(client, flows)
            add("OTP request over HTTP (client included)", create)
            add("signature over HTTP (client included)", sign)
            orm, core = bench.flow_rows(flows)
            add("a flow's two rows through the ORM", orm)
            add("a flow's two rows, Core inserts", core)
            for per_pass in PASS_SIZES:
                add(
                    f"e-mail delivery, passes of {per_pass}",
                    await bench.delivery(created.json()["id"], flows, per_pass),
                )
    return figures


def report(figures: dict[str, list[float]], database: str, flows: int, rounds: int) -> None:
    median = {name: statistics.median(values) for name, values in figures.items()}
    client = median["client alone (bare ASGI app)"]
    print(f"\nCPU per unit, {database}, medians of {rounds} rounds ({flows} flows a round)\n")
    for name, values in figures.items():
        spread = f"{min(values):.3f}-{max(values):.3f}"
        print(f"  {name:42s} {median[name]:8.3f} ms   (range {spread})")
    domain = median["OTP request, domain + database"] + median["signature, domain + database"]
    http = (
        median["OTP request over HTTP (client included)"]
        + median["signature over HTTP (client included)"]
    )
    framework = http - domain - 2 * client
    hop = median["one thread hop"] - median["one await"]
    print(
        f"\nOne flow's two calls: {http:.2f} ms over HTTP in-process = "
        f"{domain:.2f} domain + database ({domain / http:.0%}), "
        f"{2 * client:.2f} in-process client ({2 * client / http:.0%}), "
        f"{framework:.2f} application framework ({framework / http:.0%}: middleware, routing, "
        f"dependencies, validation, serialisation and thread hops)."
    )
    print(
        f"A thread hop costs {hop:.3f} ms; the two flow calls take one each (app.routing."
        f"OneUnitRoute), a GET of a signing request too, other GETs three."
    )
    healthz = median["GET /healthz"] - client
    print(
        f"/healthz costs {healthz:.3f} ms without the client; the two flow calls cost "
        f"{(http - 2 * client) / healthz:.1f} times that (the issue's ratio counts a flow as 3 "
        f"requests)."
    )
    orm, core = (
        median["a flow's two rows through the ORM"],
        median["a flow's two rows, Core inserts"],
    )
    print(
        f"Writing a flow's request and signature costs {orm:.3f} ms through the ORM's unit of "
        f"work and {core:.3f} ms as Core inserts (what the service runs): {orm - core:.3f} ms."
    )
    quiet, busy = (median[f"e-mail delivery, passes of {size}"] for size in PASS_SIZES)
    print(
        f"A flow's two e-mails (its OTP and its signing notice) cost {2 * quiet:.2f} ms to deliver "
        f"one per pass, {2 * busy:.2f} ms in passes of {PASS_SIZES[1]}."
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0] if __doc__ else None)
    parser.add_argument("--flows", type=int, default=200, help="flows per round and per mode")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--database-url", help="a SQLAlchemy URL to a database it may fill (default: SQLite)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    with (
        tempfile.TemporaryDirectory(prefix="roamsign-breakdown-") as tmp,
        MailSink(None) as sink,
    ):
        url = args.database_url or f"sqlite:///{Path(tmp) / 'roamsign.db'}"
        bench = Bench(url, Path(tmp), sink.port)
        try:
            figures = uvloop.run(measure(bench, args.flows, args.rounds))
        finally:
            bench.runtime.close()
    database = url.split(":", 1)[0].split("+", 1)[0]
    report(figures, database, args.flows, args.rounds)
    print(f"\n{os.cpu_count()} CPUs, Python {sys.version.split()[0]}")


if __name__ == "__main__":
    main()
