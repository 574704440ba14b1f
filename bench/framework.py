"""The framework's share of a signing flow, alone: the flow's two calls through the application
with the domain's answers canned, so that no database or crypto work hides it.

`bench/breakdown.py` finds the framework as a difference of two ~10 ms figures measured one
after the other (the calls over HTTP, the service calls directly); on a shared machine that
difference moves by more than the framework itself. Here the two calls (`POST
/v1/signing-requests`, `POST /v1/signing-requests/{id}/signature`) run once for real, then
again and again with the API key check and the three service methods they call
(`request_signature`, `get_own`, `sign_own`) answering what they answered the first time:
what remains is the framework (middleware, routing, dependencies, body validation,
serialisation, the thread hop) and the unit of work's empty session. The application is called
as ASGI directly, no client, and must answer the same bytes as the real calls did.

Two figures, medians of `--rounds`:
- CPU ms per flow (`time.process_time`, the worker thread included), under uvloop;
- Python function calls per flow (cProfile's count, the thread hop made inline so that the
  worker's calls are counted): the same on any machine, however loaded.

    .venv/bin/python bench/framework.py [--flows 1000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import logging
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, MutableMapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

import uvloop  # noqa: E402

from app import routing  # noqa: E402
from app.services.clients import ClientService  # noqa: E402
from app.services.mail.sink import MailSink  # noqa: E402
from app.services.signing.service import SigningService  # noqa: E402
from bench.breakdown import Bench  # noqa: E402
from tests.helpers import queued_otp  # noqa: E402

CANNED = ("request_signature", "get_own", "sign_own", "attempts_remaining")


class Flow:
    def __init__(self, bench: Bench) -> None:
        self.app = bench.app
        self.headers = [
            (b"host", b"bench"),
            (b"authorization", f"Bearer {bench.api_key}".encode()),
            (b"content-type", b"application/json"),
        ]
        person = bench.people[0]
        self.create_body = json.dumps(
            {
                "mykad": person.mykad,
                "document_hash": bench.new_hash(),
                "document_name": "PV-2026-000123",
            }
        ).encode()
        self.bench, self.pin = bench, person.pin
        self.sign_path = self.sign_body = ""

    async def call(self, path: str, body: bytes | str) -> list[dict[str, Any]]:
        raw = body.encode() if isinstance(body, str) else body
        messages = [{"type": "http.request", "body": raw, "more_body": False}]
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            if messages:
                return messages.pop()
            await asyncio.Event().wait()  # no disconnect while answering
            raise AssertionError

        async def send(message: MutableMapping[str, Any]) -> None:
            sent.append(dict(message))

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": b"",
            "headers": [*self.headers, (b"content-length", str(len(raw)).encode())],
            "client": ("127.0.0.1", 50000),
            "server": ("bench", 80),
        }
        await self.app(scope, receive, send)
        return sent

    async def real_then_canned(self) -> tuple[bytes, bytes]:
        """Runs the flow for real, recording the domain's answers; from then on they are
        canned. Returns the two answers' bodies."""
        answers: dict[str, Any] = {}
        with _recording(answers):
            created = await self.call("/v1/signing-requests", self.create_body)
            request_id = json.loads(created[1]["body"])["id"]
            runtime = self.bench.runtime
            otp = queued_otp(runtime.sessions, runtime.keys.outbox_seal, request_id)
            self.sign_path = f"/v1/signing-requests/{request_id}/signature"
            self.sign_body = json.dumps({"otp": otp, "pin": self.pin})
            signed = await self.call(self.sign_path, self.sign_body)
        for sent in (created, signed):
            if sent[0]["status"] != 201:
                raise RuntimeError(f"flow failed: {sent}")
        for name in CANNED:
            setattr(SigningService, name, _answering(answers[name]))
        ClientService.authenticate = _answering(answers["authenticate"])  # type: ignore[method-assign]
        return created[1]["body"], signed[1]["body"]

    async def run(self) -> tuple[bytes, bytes]:
        created = await self.call("/v1/signing-requests", self.create_body)
        signed = await self.call(self.sign_path, self.sign_body)
        return created[1]["body"], signed[1]["body"]


@contextmanager
def _recording(answers: dict[str, Any]) -> Iterator[None]:
    def recorded(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        def record(self: Any, *args: Any, **kwargs: Any) -> Any:
            answers[name] = method(self, *args, **kwargs)
            return answers[name]

        return record

    originals = {name: getattr(SigningService, name) for name in CANNED}
    authenticate = ClientService.authenticate
    for name, method in originals.items():
        setattr(SigningService, name, recorded(name, method))
    ClientService.authenticate = recorded("authenticate", authenticate)  # type: ignore[method-assign]
    try:
        yield
    finally:
        for name, method in originals.items():
            setattr(SigningService, name, method)
        ClientService.authenticate = authenticate  # type: ignore[method-assign]


def _answering(answer: Any) -> Callable[..., Any]:
    return lambda self, *args, **kwargs: answer


async def inline(function: Callable[..., Any], *args: Any) -> Any:
    return function(*args)


async def measure(bench: Bench, flows: int, rounds: int) -> tuple[list[float], float]:
    flow = Flow(bench)
    expected = await flow.real_then_canned()
    if await flow.run() != expected:
        raise RuntimeError("the canned flow answers other bytes than the real one")
    for _ in range(200):
        await flow.run()
    cpu = []
    for _ in range(rounds):
        started = time.process_time()
        for _ in range(flows):
            await flow.run()
        cpu.append((time.process_time() - started) / flows * 1000)
    # The hop made inline, so the profile sees the whole call on one thread.
    hop = routing.run_in_threadpool  # type: ignore[attr-defined]
    routing.run_in_threadpool = inline  # type: ignore[attr-defined,assignment]
    try:
        profile = cProfile.Profile()
        profile.enable()
        for _ in range(200):
            await flow.run()
        profile.disable()
    finally:
        routing.run_in_threadpool = hop  # type: ignore[attr-defined]
    calls = pstats.Stats(profile).total_calls / 200  # type: ignore[attr-defined]
    return cpu, calls


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0] if __doc__ else None)
    parser.add_argument("--flows", type=int, default=1000, help="flows per round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="roamsign-framework-") as tmp, MailSink(None) as sink:
        bench = Bench(f"sqlite:///{Path(tmp) / 'roamsign.db'}", Path(tmp), sink.port)
        try:
            cpu, calls = uvloop.run(measure(bench, args.flows, args.rounds))
        finally:
            bench.runtime.close()
    spread = f"{min(cpu):.3f}-{max(cpu):.3f}"
    print(
        f"The framework's share of a flow's two calls (domain canned): "
        f"{statistics.median(cpu):.3f} ms CPU (range {spread}, {args.rounds} rounds of "
        f"{args.flows}), {calls:.0f} Python calls"
    )


if __name__ == "__main__":
    main()
