"""The signing flow on each key store, `software` and `pkcs11` (SoftHSM2), in one run.

Per store, the configuration of bench/flow.py (`run_configuration`: a fresh database, the
people, a real `python -m app serve`, the e-mail channel) with the store chosen through the
environment, as an operator chooses it: for `pkcs11`, a SoftHSM2 token made for the run and
ROAMSIGN_KEY_STORE / ROAMSIGN_PKCS11_* / SOFTHSM2_CONF set, so that the seeding and every
server process keep their keys in it. `--rounds` alternates the stores (software, pkcs11,
software, ...) and reports medians, because on a shared machine the neighbours move more than
the store does. Then, in this process: the per-signature cost of each store (a sealed blob
opened and signed; a wrapped key unwrapped, signed and destroyed; a cached unwrapped key), and
the token's object count before and after `--credentials` wrapped keys (it must not move).

    .venv/bin/python bench/keystores.py [--db sqlite|postgresql] [--workers 2] [--people 50]
        [--duration 6] [--rounds 1] [--credentials 10000]

Nothing asserts: it prints figures.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

from app.crypto.keystore import SoftwareKeyStore  # noqa: E402
from app.crypto.pkcs11 import Pkcs11KeyStore  # noqa: E402
from app.crypto.pkcs11_secrets import provision_token_secrets  # noqa: E402
from app.settings import Settings  # noqa: E402
from bench import flow  # noqa: E402
from bench.harness.load import LoadPlan  # noqa: E402
from bench.harness.measure import ConfigResult  # noqa: E402
from bench.harness.report import fmt  # noqa: E402
from bench.hsm import rate  # noqa: E402
from tests.softhsm import USER_PIN, SoftHsmToken, create_token, ensure_softhsm  # noqa: E402

STORES = ("software", "pkcs11")
DIGEST = hashlib.sha256(b"Baucar Bayaran PV-2026-000123").digest()


@contextlib.contextmanager
def key_store_environment(store: str, token: SoftHsmToken) -> Iterator[None]:
    """This process's environment (read by `Settings` and copied into the server's) for one
    store; restored afterwards."""
    variables = token.environment()
    saved = {name: os.environ.get(name) for name in variables}
    if store == "pkcs11":
        os.environ.update(variables)
    else:
        for name in variables:
            os.environ.pop(name, None)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def signature_costs(token: SoftHsmToken, seconds: float) -> list[tuple[str, float]]:
    """Microseconds per signature of an ECDSA P-256 credential key, in this process."""
    software = SoftwareKeyStore(secrets.token_bytes(32))
    software_blob = software.generate("bench", "ecdsa-p256").blob
    cached = Pkcs11KeyStore.open(token.module, token.label, USER_PIN)
    uncached = Pkcs11KeyStore.open(token.module, token.label, USER_PIN, cache_size=0)
    try:
        blob = cached.generate("bench", "ecdsa-p256").blob
        loops = (
            (
                "software: open the sealed blob, sign",
                lambda: software.sign_digest("bench", software_blob, DIGEST, "sha256"),
            ),
            (
                "pkcs11: unwrap, sign, destroy (a miss)",
                lambda: uncached.sign_digest("bench", blob, DIGEST, "sha256"),
            ),
            (
                "pkcs11: cached unwrapped key (a hit)",
                lambda: cached.sign_digest("bench", blob, DIGEST, "sha256"),
            ),
        )
        return [(name, 1e6 / rate(loop, seconds, 1_000_000)) for name, loop in loops]
    finally:
        cached.close()
        uncached.close()


def token_objects(token: SoftHsmToken, credentials: int, max_seconds: float) -> str:
    store = Pkcs11KeyStore.open(token.module, token.label, USER_PIN)
    try:
        before = store.count_token_objects()
        started = time.perf_counter()
        made = 0
        while made < credentials and time.perf_counter() - started < max_seconds:
            store.generate(f"person-{made}", "ecdsa-p256")
            made += 1
        elapsed = time.perf_counter() - started
        after = store.count_token_objects()
    finally:
        store.close()
    return (
        f"token objects: {before} before, {after} after {made:,} credentials' keys "
        f"({made / elapsed:,.0f} keys/s)"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0] if __doc__ else None)
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--workers", type=int, default=2, help="server workers on PostgreSQL")
    parser.add_argument("--people", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--duration", type=float, default=6.0, help="seconds per load phase")
    parser.add_argument("--rounds", type=int, default=1, help="runs of each store, alternated")
    parser.add_argument("--credentials", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=1.0, help="per signature-cost loop")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    flow_args = flow.parse_args(
        ["--people", str(args.people), "--concurrency", str(args.concurrency)]
    )
    plan = LoadPlan(
        concurrency=args.concurrency,
        duration=args.duration,
        healthz_seconds=2.0,
        warmup_seconds=2.0,
        rate=None,
        max_in_flight=256,
        client="aiohttp",
        channels=("email",),
    )
    workers = 1 if args.db == "sqlite" else args.workers
    results: dict[str, list[ConfigResult]] = {store: [] for store in STORES}
    with tempfile.TemporaryDirectory(prefix="roamsign-bench-keystores-") as directory:
        token = create_token(Path(directory) / "softhsm", ensure_softhsm(), "bench-keystores")
        os.environ["SOFTHSM2_CONF"] = str(token.conf)
        # A new deployment on the token (`keys init`): its MAC keys made there, the outbox's
        # data key wrapped under its KEK in a file every server of the run reads.
        data_key = Path(directory) / "outbox-seal.wrapped-key"
        os.environ["ROAMSIGN_PKCS11_DATA_KEY_FILE"] = str(data_key)
        with key_store_environment("pkcs11", token):
            provisioning = Pkcs11KeyStore.from_settings(Settings())
            try:
                provision_token_secrets(provisioning, None, data_key)
            finally:
                provisioning.close()
        for round_number in range(args.rounds):
            for store in STORES:
                print(f"== round {round_number + 1}, key store {store}", flush=True)
                with key_store_environment(store, token):
                    result = flow.run_configuration(args.db, workers, flow_args, plan)
                if result.error:
                    print(f"  FAILED: {result.error}\n{result.log_tail or ''}", flush=True)
                results[store].append(result)

        print()
        print(
            f"{'key store':<10} {'flows/s':>8} {'server+db CPU ms/flow':>22} "
            f"{'p50 ms':>7} {'peak RSS per worker, MiB':>26}"
        )
        rates: dict[str, float] = {}
        for store in STORES:
            closed = [r.phases[0] for r in results[store] if r.phases]
            if not closed:
                print(f"{store:<10} no figures")
                continue
            rates[store] = statistics.median(p.rate for p in closed)
            cpu = statistics.median(p.cpu_ms_per_flow or 0.0 for p in closed)
            p50 = statistics.median(
                statistics.median(p.latencies_ms) for p in closed if p.latencies_ms
            )
            rss = ", ".join(fmt(v) for r in results[store] for v in r.peak_rss_mib)
            print(f"{store:<10} {rates[store]:>8.1f} {cpu:>22.1f} {p50:>7.0f} {rss:>26}")
        if len(rates) == 2:
            print(f"pkcs11 / software flow rate: {rates['pkcs11'] / rates['software']:.2f}")

        print("\nper signature (ECDSA P-256, one thread, in this process):")
        for name, micros in signature_costs(token, args.seconds):
            print(f"  {name:<42} {micros:>8.0f} us")
        print()
        print(token_objects(token, args.credentials, max_seconds=120))
    return 0 if all(not r.error for rs in results.values() for r in rs) else 1


if __name__ == "__main__":
    sys.exit(main())
