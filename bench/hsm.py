"""What keeping keys in a PKCS#11 token costs, on SoftHSM2: signatures a second, one run.

Prints, for ECDSA P-256 over a SHA-256 digest:
1. a token key (a persistent object, like the CA keys): `sign_with_token_key`;
2. a wrapped key unwrapped, used once and destroyed (`cache_size=0`): a cache miss;
3. a wrapped key already unwrapped in this process's cache: a cache hit;
4. the same cache hit from 4 threads at once (PyKCS11 holds the GIL during each call);
5. the software baselines: `sign_digest_with` on a loaded key, and `SoftwareKeyStore.sign_digest`
   (open the sealed blob, load the key, sign), which is what a flow pays today;
then HMAC-SHA256 in the token against `hmac` here; sealing (AES-256-GCM, a 600-byte message)
inside the token against `AESGCM` here (what a data key unwrapped into this process would cost
a message once unwrapped); what one signing flow's secrets cost (its MACs and seals, counted
below); and the number of token objects before and after generating `--keys` wrapped keys (it
must not move). Each loop stops at `--count`
operations or `--seconds`, whichever comes first; the figures are medians of `--rounds`
interleaved rounds, because on a shared machine one loop alone says more about the neighbours
than about the token. Nothing asserts: it prints figures.

    .venv/bin/python bench/hsm.py [--seconds 1] [--count 20000] [--rounds 3] [--keys 2000]
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import os
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

from app.crypto.keys import DerivedKeys, Secrets, software_secrets  # noqa: E402
from app.crypto.keystore import SoftwareKeyStore, sign_digest_with  # noqa: E402
from app.crypto.pkcs11 import Pkcs11KeyStore  # noqa: E402
from app.crypto.pkcs11_secrets import provision_token_secrets, token_secrets  # noqa: E402
from app.settings import Profile, Settings  # noqa: E402
from tests.hsm.conftest import USER_PIN, create_token  # noqa: E402

DIGEST = hashlib.sha256(b"Baucar Bayaran PV-2026-000123").digest()
# What one signing flow asks of its secrets, counted on tests/api's request-then-sign flow:
# the request: 2 rate-limit keys, the audit event's subject ref and MAC, the OTP MAC, the sealed
# e-mail; the signature: OTP and PIN MACs, an audit event (subject ref and MAC), the sealed
# signing notice; delivery: both messages opened, an audit MAC each (no MyKad, no subject ref).
MACS_PER_FLOW = 11
SEALS_PER_FLOW = 2
OPENS_PER_FLOW = 2
MESSAGE = b"X" * 600  # about the size of a sealed OTP e-mail


def rate(operation: Callable[[], object], seconds: float, count: int) -> float:
    operation()  # first call outside the clock: sessions, lookups
    done = 0
    started = time.perf_counter()
    deadline = started + seconds
    while done < count and time.perf_counter() < deadline:
        operation()
        done += 1
    return done / (time.perf_counter() - started)


def threaded_rate(
    operation: Callable[[], object], threads: int, seconds: float, count: int
) -> float:
    per_thread = count // threads
    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        done = sum(pool.map(lambda _: _loop(operation, seconds, per_thread), range(threads)))
    return done / (time.perf_counter() - started)


def _loop(operation: Callable[[], object], seconds: float, count: int) -> int:
    deadline = time.perf_counter() + seconds
    done = 0
    while done < count and time.perf_counter() < deadline:
        operation()
        done += 1
    return done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--keys", type=int, default=2_000)
    args = parser.parse_args()
    seconds, count = args.seconds, args.count

    module = Settings(profile=Profile.DEMO).pkcs11_module
    with tempfile.TemporaryDirectory(prefix="roamsign-bench-hsm-") as directory:
        token = create_token(Path(directory), module)
        os.environ["SOFTHSM2_CONF"] = str(token.conf)
        cached = Pkcs11KeyStore.open(module, token.label, USER_PIN)
        uncached = Pkcs11KeyStore.open(module, token.label, USER_PIN, cache_size=0)
        generated = cached.generate("bench-credential", "ecdsa-p256")
        cached.generate_token_key("bench-ca", "ecdsa-p256")
        software_store = SoftwareKeyStore(secrets.token_bytes(32))
        software_blob = software_store.generate("bench-credential", "ecdsa-p256").blob
        software_key = software_store.private_key("bench-credential", software_blob)

        def sign_cached() -> bytes:
            return cached.sign_digest("bench-credential", generated.blob, DIGEST, "sha256")

        def sign_token_key() -> bytes:
            return cached.sign_with_token_key("bench-ca", DIGEST, "sha256")

        def sign_uncached() -> bytes:
            return uncached.sign_digest("bench-credential", generated.blob, DIGEST, "sha256")

        def sign_software_store() -> bytes:
            return software_store.sign_digest("bench-credential", software_blob, DIGEST, "sha256")

        def sign_software_key() -> bytes:
            return sign_digest_with(software_key, DIGEST, "sha256")

        measures: list[tuple[str, Callable[[], float]]] = [
            ("token key (sign_with_token_key)", lambda: rate(sign_token_key, seconds, count)),
            ("wrapped: unwrap + sign + destroy", lambda: rate(sign_uncached, seconds, count)),
            ("wrapped: cached unwrapped key", lambda: rate(sign_cached, seconds, count)),
            ("wrapped: cached, 4 threads", lambda: threaded_rate(sign_cached, 4, seconds, count)),
            (
                "software: SoftwareKeyStore.sign_digest",
                lambda: rate(sign_software_store, seconds, count),
            ),
            (
                "software: sign_digest_with (baseline)",
                lambda: rate(sign_software_key, seconds, count),
            ),
        ]
        figures: dict[str, list[float]] = {name: [] for name, _ in measures}
        for _ in range(args.rounds):
            for name, measure in measures:
                figures[name].append(measure())
        rows = [(name, statistics.median(values)) for name, values in figures.items()]
        baseline = rows[-1][1]
        print(
            f"ECDSA P-256 signatures a second (SoftHSM2, {os.cpu_count()} CPUs, medians of "
            f"{args.rounds} rounds, each loop <= {count} or {seconds:g} s)"
        )
        for name, value in rows:
            print(
                f"  {name:<40} {value:>9,.0f}/s {1e6 / value:>8.1f} us"
                f"  x{value / baseline:.2f} of baseline"
            )

        cached.secret_key("bench-mac")
        known = secrets.token_bytes(32)
        token_mac = statistics.median(
            rate(lambda: cached.mac("bench-mac", b"person|otp|123456"), seconds, count)
            for _ in range(args.rounds)
        )
        local_mac = statistics.median(
            rate(
                lambda: hmac.new(known, b"person|otp|123456", hashlib.sha256).digest(),
                seconds,
                count,
            )
            for _ in range(args.rounds)
        )
        print(
            f"HMAC-SHA256: token {token_mac:,.0f}/s, in process {local_mac:,.0f}/s "
            f"(x{token_mac / local_mac:.2f})"
        )

        report_secrets(cached, seconds, count, args.rounds)

        before = cached.count_token_objects()
        started = time.perf_counter()
        for n in range(args.keys):
            cached.generate(f"person-{n}", "ecdsa-p256")
        elapsed = time.perf_counter() - started
        after = cached.count_token_objects()
        print(
            f"token objects: {before} before, {after} after generating {args.keys} wrapped keys "
            f"({args.keys / elapsed:,.0f} keys/s)"
        )
        cached.close()
        uncached.close()


def report_secrets(store: Pkcs11KeyStore, seconds: float, count: int, rounds: int) -> None:
    provision_token_secrets(store, None)
    token, software = token_secrets(store), software_secrets(DerivedKeys.from_master(b"k" * 32))
    sealed = {"token": token.outbox_seal.seal(MESSAGE, b"outbox:1"), "software": b""}
    sealed["software"] = software.outbox_seal.seal(MESSAGE, b"outbox:1")

    def per_op(secrets: Secrets, name: str) -> dict[str, float]:
        operations = {
            "mac": lambda: secrets.pin_pepper.mac(b"credential|123456"),
            "seal": lambda: secrets.outbox_seal.seal(MESSAGE, b"outbox:1"),
            "open": lambda: secrets.outbox_seal.open(sealed[name], b"outbox:1"),
        }
        return {
            what: 1e6 / statistics.median(rate(op, seconds, count) for _ in range(rounds))
            for what, op in operations.items()
        }

    costs = {"token": per_op(token, "token"), "software": per_op(software, "software")}
    print("Secrets, microseconds an operation (token = SoftHSM2; software = in this process):")
    for what in ("mac", "seal", "open"):
        print(
            f"  {what:<5} token {costs['token'][what]:>8.1f} us   software "
            f"{costs['software'][what]:>6.1f} us"
        )
    for name, cost in costs.items():
        flow = (
            MACS_PER_FLOW * cost["mac"]
            + SEALS_PER_FLOW * cost["seal"]
            + OPENS_PER_FLOW * cost["open"]
        )
        print(
            f"  one signing flow ({MACS_PER_FLOW} MACs, {SEALS_PER_FLOW} seals, "
            f"{OPENS_PER_FLOW} opens), {name}: {flow / 1000:.2f} ms"
        )


if __name__ == "__main__":
    main()
