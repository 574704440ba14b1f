"""What keeping keys in a PKCS#11 token costs, on SoftHSM2: signatures a second, one run.

Prints, for ECDSA P-256 over a SHA-256 digest:
1. a token key (a persistent object, like the CA keys): `sign_with_token_key`;
2. a wrapped key unwrapped, used once and destroyed (`cache_size=0`): a cache miss;
3. a wrapped key already unwrapped in this process's cache: a cache hit;
4. the same cache hit from 4 threads at once (PyKCS11 holds the GIL during each call);
5. the software baselines: `sign_digest_with` on a loaded key, and `SoftwareKeyStore.sign_digest`
   (open the sealed blob, load the key, sign), which is what a flow pays today;
then HMAC-SHA256 in the token against `hmac` here; the secrets per operation and per signing
flow (its MACs and seals, counted below): stage 2a's way (PyKCS11's Session.sign, AES-GCM
inside the token), today's (one C_SignInit + C_Sign through ctypes, subject refs remembered,
the outbox sealed under the data key unwrapped into this process) and software; and the
number of token objects before and after generating `--keys` wrapped keys (it must not move).
Each loop stops at `--count` operations or `--seconds`, whichever comes first; the figures
are medians of `--rounds` interleaved rounds, because on a shared machine one loop alone says
more about the neighbours than about the token. Nothing asserts: it prints figures.

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

import PyKCS11  # noqa: E402

from app.crypto.keys import CachedMacKey, DerivedKeys, software_secrets  # noqa: E402
from app.crypto.keystore import SoftwareKeyStore, sign_digest_with  # noqa: E402
from app.crypto.pkcs11 import _HMAC, Pkcs11KeyStore  # noqa: E402
from app.crypto.pkcs11_secrets import (  # noqa: E402
    MAC_LABELS,
    SEAL_LABEL,
    TokenSealKey,
    data_key_file,
    provision_token_secrets,
    token_secrets,
)
from app.settings import Profile, Settings  # noqa: E402
from tests.hsm.conftest import USER_PIN, create_token  # noqa: E402

DIGEST = hashlib.sha256(b"Baucar Bayaran PV-2026-000123").digest()
# What one signing flow asks of its secrets, counted on tests/api's request-then-sign flow:
# the request: 2 rate-limit keys, the audit event's subject ref and MAC, the OTP MAC, the sealed
# e-mail; the signature: OTP and PIN MACs, an audit event (subject ref and MAC), the sealed
# signing notice; delivery: both messages opened, an audit MAC each (no MyKad, no subject ref).
MACS_PER_FLOW = 11
# Of those, the ones under the subject-ref key (2 rate-limit keys, 2 audit subject refs):
# deterministic, remembered per process; the 7 others (OTP x2, PIN, audit MAC x4) go to the token.
SUBJECT_MACS_PER_FLOW = 4
TOKEN_MACS_PER_FLOW = MACS_PER_FLOW - SUBJECT_MACS_PER_FLOW
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

        report_secrets(cached, Path(directory), seconds, count, args.rounds)

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


def report_secrets(
    store: Pkcs11KeyStore, directory: Path, seconds: float, count: int, rounds: int
) -> None:
    wrapped_key = data_key_file(directory / "var")
    provision_token_secrets(store, None, wrapped_key)
    token = token_secrets(store, wrapped_key)
    software = software_secrets(DerivedKeys.from_master(b"k" * 32))
    store.aes_key(SEAL_LABEL)  # stage 2a's key: AES-GCM inside the token
    in_token = TokenSealKey(store, SEAL_LABEL)
    label = MAC_LABELS["pin_pepper"]
    data = b"credential|123456"
    assert isinstance(token.subject_ref, CachedMacKey)
    token.subject_ref.mac(b"850101145555")
    sealed = {
        "token": token.outbox_seal.seal(MESSAGE, b"outbox:1"),
        "in_token": in_token.seal(MESSAGE, b"outbox:1"),
        "software": software.outbox_seal.seal(MESSAGE, b"outbox:1"),
    }

    def stage_2a_mac() -> bytes:
        # Stage 2a's call: PyKCS11's Session.sign (size query, then the MAC, byte lists).
        with store._token.session() as session:
            return store._sign_labelled(session, PyKCS11.CKO_SECRET_KEY, label, data, _HMAC)

    operations: dict[str, Callable[[], object]] = {
        "mac: token, PyKCS11 Session.sign (2a)": stage_2a_mac,
        "mac: token, one C_SignInit + C_Sign": lambda: token.pin_pepper.mac(data),
        "mac: token key, remembered (subject ref)": lambda: token.subject_ref.mac(b"850101145555"),
        "mac: software": lambda: software.pin_pepper.mac(data),
        "seal: AES-GCM in the token (2a)": lambda: in_token.seal(MESSAGE, b"outbox:1"),
        "seal: unwrapped data key": lambda: token.outbox_seal.seal(MESSAGE, b"outbox:1"),
        "seal: software": lambda: software.outbox_seal.seal(MESSAGE, b"outbox:1"),
        "open: AES-GCM in the token (2a)": lambda: in_token.open(sealed["in_token"], b"outbox:1"),
        "open: unwrapped data key": lambda: token.outbox_seal.open(sealed["token"], b"outbox:1"),
        "open: software": lambda: software.outbox_seal.open(sealed["software"], b"outbox:1"),
    }
    figures: dict[str, list[float]] = {name: [] for name in operations}
    for _ in range(rounds):
        for name, operation in operations.items():
            figures[name].append(1e6 / rate(operation, seconds, count))
    cost = {name: statistics.median(values) for name, values in figures.items()}
    software_cost = {
        "mac": cost["mac: software"],
        "seal": cost["seal: software"],
        "open": cost["open: software"],
    }
    print(f"Secrets, microseconds an operation (a {len(MESSAGE)}-byte message to seal):")
    for name, value in cost.items():
        what = name.split(":")[0]
        print(f"  {name:<44} {value:>8.1f} us  x{value / software_cost[what]:.1f} of software")
    flows = {
        "stage 2a (token MACs by Session.sign, GCM in the token)": (
            MACS_PER_FLOW * cost["mac: token, PyKCS11 Session.sign (2a)"]
            + SEALS_PER_FLOW * cost["seal: AES-GCM in the token (2a)"]
            + OPENS_PER_FLOW * cost["open: AES-GCM in the token (2a)"]
        ),
        "now, a person seen before (subject refs remembered)": (
            TOKEN_MACS_PER_FLOW * cost["mac: token, one C_SignInit + C_Sign"]
            + SUBJECT_MACS_PER_FLOW * cost["mac: token key, remembered (subject ref)"]
            + SEALS_PER_FLOW * cost["seal: unwrapped data key"]
            + OPENS_PER_FLOW * cost["open: unwrapped data key"]
        ),
        "now, a person not seen before": (
            MACS_PER_FLOW * cost["mac: token, one C_SignInit + C_Sign"]
            + SEALS_PER_FLOW * cost["seal: unwrapped data key"]
            + OPENS_PER_FLOW * cost["open: unwrapped data key"]
        ),
        "software": (
            MACS_PER_FLOW * software_cost["mac"]
            + SEALS_PER_FLOW * software_cost["seal"]
            + OPENS_PER_FLOW * software_cost["open"]
        ),
    }
    print(
        f"One signing flow's secrets ({MACS_PER_FLOW} MACs, {SUBJECT_MACS_PER_FLOW} of them "
        f"subject refs; {SEALS_PER_FLOW} seals, {OPENS_PER_FLOW} opens):"
    )
    for name, value in flows.items():
        print(
            f"  {name:<56} {value / 1000:>6.2f} ms  "
            f"+{(value - flows['software']) / 1000:.2f} ms over software"
        )


if __name__ == "__main__":
    main()
