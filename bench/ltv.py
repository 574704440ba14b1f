"""What long-term evidence costs: a signing flow with and without its signature time-stamp
(the built-in TSA, in-process), and OCSP responses per second, in one run, one process.

The flows are `bench/breakdown.py`'s domain + database layer (the two service calls of a
flow, each in its own unit of work, authentication included), alternately stamped (as the
server signs: `app.units.Services`) and unstamped (the same `SigningService` without its
stamper), in `--rounds` interleaved rounds; CPU time of this process (`time.process_time`).
OCSP: `POST /v1/ca/ocsp` through the application in-process (`httpx.ASGITransport`, the real
middleware and dependencies), wall-clock responses per second on one thread, once for the
same request without a nonce (answered from the cached signed response) and once with a
fresh nonce each time (signed every time); then a real `python -m app serve` (one worker, on
this database) answering the same request, 16 in flight. The responder service alone (status
query and cache, no HTTP) is measured too. Nothing asserts: it prints figures.

    .venv/bin/python bench/ltv.py [--flows 200] [--rounds 3] [--ocsp 2000]
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
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

import httpx  # noqa: E402
from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.x509 import ocsp  # noqa: E402

from app.models import Credential  # noqa: E402
from app.services.mail.sink import MailSink  # noqa: E402
from app.services.signing.service import SigningService  # noqa: E402
from app.units import Services  # noqa: E402
from bench.breakdown import Bench  # noqa: E402
from tests.harness import serve, serve_environment  # noqa: E402


class LtvBench(Bench):
    stamped = True

    def _service(self, session: Any) -> SigningService:
        services = Services(self.runtime, session)
        if self.stamped:
            return services.signing
        return SigningService(
            session,
            settings=self.runtime.settings,
            keys=self.runtime.keys,
            key_store=self.runtime.key_store,
            ca=services.ca,
            audit=services.audit,
            notices=self.runtime.notices,
        )

    def ocsp_request(self, nonce: bool) -> bytes:
        with self.runtime.sessions() as session:
            credential = session.get(Credential, self.people[0].credential_id)
            assert credential is not None and credential.certificate_pem is not None
            leaf = x509.load_pem_x509_certificate(credential.certificate_pem.encode())
            issuing = Services(self.runtime, session).ca.material().issuing
        builder = ocsp.OCSPRequestBuilder().add_certificate(leaf, issuing, hashes.SHA1())
        if nonce:
            builder = builder.add_extension(x509.OCSPNonce(secrets.token_bytes(16)), False)
        return builder.build().public_bytes(serialization.Encoding.DER)


async def ocsp_rate(bench: LtvBench, count: int, nonce: bool) -> float:
    transport = httpx.ASGITransport(app=bench.app)
    headers = {"Content-Type": "application/ocsp-request"}
    requests = [bench.ocsp_request(nonce) for _ in range(count if nonce else 1)]
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        await client.post("/v1/ca/ocsp", content=requests[0], headers=headers)  # warm
        started = time.perf_counter()
        for i in range(count):
            response = await client.post(
                "/v1/ca/ocsp", content=requests[i % len(requests)], headers=headers
            )
            assert response.status_code == 200
        return count / (time.perf_counter() - started)


def serve_and_measure(bench: LtvBench, var_dir: Path, smtp_port: int, seconds: float) -> float:
    settings = bench.runtime.settings
    assert settings.master_key_file is not None
    env = serve_environment(
        database_url=settings.database_url,
        key_file=Path(settings.master_key_file),
        var_dir=var_dir,
        smtp_port=smtp_port,
        ROAMSIGN_LOG_LEVEL="WARNING",
    )
    server = serve(env, var_dir, workers=1)
    try:
        request = bench.ocsp_request(nonce=False)
        return asyncio.run(ocsp_server_rate(server.url, request, seconds, in_flight=16))
    finally:
        server.stop()


def ocsp_direct_rate(bench: LtvBench, count: int) -> float:
    """The responder service alone (its status query and the cache), one unit of work."""
    request = bench.ocsp_request(nonce=False)
    with bench.runtime.sessions() as session:
        responder = Services(bench.runtime, session).ocsp
        responder.reply(request, bench.runtime.clock.now())
        started = time.perf_counter()
        for _ in range(count):
            responder.reply(request, bench.runtime.clock.now())
        return count / (time.perf_counter() - started)


async def ocsp_server_rate(url: str, request: bytes, seconds: float, in_flight: int) -> float:
    """Responses a second from a real `python -m app serve` (one worker), `in_flight` requests
    at once over one aiohttp session (the load generator bench/flow.py uses)."""
    import aiohttp

    headers = {"Content-Type": "application/ocsp-request"}
    done = 0
    async with aiohttp.ClientSession() as http:

        async def lane(deadline: float) -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                async with http.post(f"{url}/v1/ca/ocsp", data=request, headers=headers) as r:
                    await r.read()
                    assert r.status == 200
                done += 1

        await lane(time.perf_counter() + 0.5)  # warm
        done = 0
        started = time.perf_counter()
        await asyncio.gather(*(lane(started + seconds) for _ in range(in_flight)))
        return done / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0] if __doc__ else None)
    parser.add_argument("--flows", type=int, default=200, help="flows per round and per mode")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ocsp", type=int, default=2000, help="OCSP requests per measure")
    parser.add_argument("--server-seconds", type=float, default=5.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    figures: dict[str, list[float]] = {"stamped": [], "unstamped": []}
    with tempfile.TemporaryDirectory(prefix="roamsign-ltv-") as tmp, MailSink(None) as sink:
        bench = LtvBench(f"sqlite:///{Path(tmp) / 'roamsign.db'}", Path(tmp), sink.port)
        try:
            bench.direct_flows(20)  # warm both paths
            for _ in range(args.rounds):
                for mode in ("unstamped", "stamped"):
                    bench.stamped = mode == "stamped"
                    create_ms, sign_ms = bench.direct_flows(args.flows)
                    figures[mode].append(create_ms + sign_ms)
            cached = asyncio.run(ocsp_rate(bench, args.ocsp, nonce=False))
            signed = asyncio.run(ocsp_rate(bench, args.ocsp // 4, nonce=True))
            direct = ocsp_direct_rate(bench, args.ocsp)
            served = serve_and_measure(bench, Path(tmp), sink.port, args.server_seconds)
        finally:
            bench.runtime.close()
    unstamped = statistics.median(figures["unstamped"])
    stamped = statistics.median(figures["stamped"])
    print(f"signing flow, CPU ms per flow (median of {args.rounds} rounds of {args.flows}):")
    print(f"  without time-stamp   {unstamped:6.2f} ms  ({1000 / unstamped:6.0f} flows/s a core)")
    print(f"  built-in TSA stamp   {stamped:6.2f} ms  ({1000 / stamped:6.0f} flows/s a core)")
    print(f"  rate kept with stamps: {unstamped / stamped:.0%}")
    print("OCSP through the application, one thread:")
    print(f"  cached answer (no nonce)   {cached:7.0f} responses/s")
    print(f"  signed each time (nonce)   {signed:7.0f} responses/s")
    print(f"  the responder service alone (cached)  {direct:7.0f} responses/s")
    print(f"  a real server, 1 worker, 16 in flight (cached)  {served:7.0f} responses/s")
    print(f"\n{os.cpu_count()} CPUs, Python {sys.version.split()[0]}, SQLite")


if __name__ == "__main__":
    main()
