"""Bulk enrolment from CSV: `python -m app enrol --csv FILE` timed on 10,000 token users.

Per database (SQLite file, or a throwaway PostgreSQL): a fresh migrated database, a master key,
the CA; `--people` registered token users (inserted in bulk: the set-up is not what is measured)
of whom some already hold a roaming credential and some have no e-mail address, plus MyKads
of nobody and malformed ones; a CSV of them all in random order. Then, each as a separate
`python -m app enrol --csv` process (what an operator runs):

1. the first run: every row's outcome is checked against what it must be;
2. the same file again: every enrolled person must now be `already_enrolled`, nothing new queued.

Printed: wall time of each run (process start to exit, imports included), people per second,
and the report's counts.

    .venv/bin/python bench/enrol.py [--db sqlite|postgresql|both] [--people 10000]
        [--batch-size 500]
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import random
import secrets
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

from sqlalchemy import func, insert, select  # noqa: E402

from app.clock import SystemClock  # noqa: E402
from app.migrate import upgrade  # noqa: E402
from app.models import Credential, OutboxMessage, RoamingApplication, User  # noqa: E402
from app.runtime import Runtime  # noqa: E402
from app.settings import Settings, write_master_key  # noqa: E402
from tests.factories import Factory  # noqa: E402
from tests.pg_server import TemporaryPostgres  # noqa: E402

ROAMING_SHARE = 0.02  # already moved: `already_roaming`
NO_EMAIL_SHARE = 0.01  # `no_email`
UNKNOWN = 50  # MyKads of nobody: `unknown_person`
MALFORMED = 50  # `invalid_mykad`
NOBODY_BORN = "031231"  # after every registered person's date of birth


@dataclass
class Population:
    expected: dict[str, str]  # the CSV cell -> the outcome it must get
    rows: list[str]


def mykad_for(n: int) -> str:
    # Born 1970-01-01 + (n mod 12000) days, up to 2002-11: always a valid date; the last six
    # digits are n itself, so every MyKad is unique.
    born = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(days=n % 12000)
    return f"{born:%y%m%d}{n // 10000:02d}{n % 10000:04d}"


def populate(runtime: Runtime, people: int) -> Population:
    """Token users inserted in bulk, a few roaming holders through the real services."""
    now = runtime.clock.now()
    mykads = [mykad_for(n) for n in range(people)]
    roaming = set(random.sample(range(people), int(people * ROAMING_SHARE)))
    no_email = set(
        random.sample(sorted(set(range(people)) - roaming), int(people * NO_EMAIL_SHARE))
    )
    expected: dict[str, str] = {}
    users, tokens = [], []
    factory = Factory(runtime)
    for n, mykad in enumerate(mykads):
        if n in roaming:
            factory.person(mykad=mykad, email=f"r{n}@agency.gov.my")
            expected[mykad] = "already_roaming"
            continue
        user_id = str(uuid.uuid4())
        users.append(
            {
                "id": user_id,
                "mykad": mykad,
                "name": f"Penjawat Awam {n}",
                "email": None if n in no_email else f"user{n}@agency.gov.my",
                "phone": None,
                "agency": f"AGENCY-{n % 40}",
                "created_at": now,
                "updated_at": now,
                "consecutive_failed_checks": 0,
            }
        )
        tokens.append(
            {
                "id": str(uuid.uuid4()),
                "user_id": user_id,
                "medium": "token",
                "status": "active",
                "token_serial": f"TKN-{n:06d}",
                "not_after": now + timedelta(days=365),
                "pin_failures": 0,
                "created_at": now,
                "updated_at": now,
            }
        )
        expected[mykad] = "no_email" if n in no_email else "enrolled"
    with runtime.sessions.begin() as session:
        session.execute(insert(User), users)
        session.execute(insert(Credential), tokens)
    unknown = [f"{NOBODY_BORN}{n:06d}" for n in range(UNKNOWN)]
    for mykad in unknown:
        expected[mykad] = "unknown_person"
    malformed = [f"85130{n:07d}" for n in range(MALFORMED)]  # month 13
    for mykad in malformed:
        expected[mykad] = "invalid_mykad"
    rows = list(expected)
    random.shuffle(rows)
    return Population(expected, rows)


def run_enrol(
    env: dict[str, str], csv_file: Path, batch_size: int
) -> tuple[float, list[dict[str, str]], str]:
    started = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "app",
            "enrol",
            "--csv",
            str(csv_file),
            "--batch-size",
            str(batch_size),
        ],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"enrol failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return elapsed, list(csv.DictReader(io.StringIO(done.stdout))), done.stderr


def count(runtime: Runtime, model: Any) -> int:
    with runtime.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def check(population: Population, report: list[dict[str, str]], second_run: bool) -> Counter[str]:
    assert len(report) == len(population.rows), (len(report), len(population.rows))
    outcomes: Counter[str] = Counter()
    for given, row in zip(population.rows, report, strict=True):
        want = population.expected[given]
        if second_run and want == "enrolled":
            want = "already_enrolled"
        assert row["mykad"] == given, (row, given)
        assert row["outcome"] == want, (given, row["outcome"], want)
        assert bool(row["application_id"]) == (want in ("enrolled", "already_enrolled"))
        outcomes[row["outcome"]] += 1
    return outcomes


def bench(database: str, people: int, batch_size: int) -> None:
    with tempfile.TemporaryDirectory(prefix="roamsign-enrol-") as directory:
        work = Path(directory)
        pg = TemporaryPostgres().start() if database == "postgresql" else None
        try:
            url = pg.url if pg else f"sqlite:///{work / 'roamsign.db'}"
            upgrade(url)
            key_file = work / "master.key"
            write_master_key(key_file, secrets.token_bytes(32))
            settings = Settings(
                profile="production",
                database_url=url,
                master_key_file=key_file,
                var_dir=work,
                delivery_worker=False,
            )
            runtime = Runtime.build(settings, SystemClock())
            Factory(runtime).init_ca()
            started = time.perf_counter()
            population = populate(runtime, people)
            print(
                f"[{database}] set-up: {len(population.rows)} CSV rows "
                f"({people} registered people) in {time.perf_counter() - started:.1f} s"
            )
            csv_file = work / "token-users.csv"
            with csv_file.open("w", newline="") as file:
                writer = csv.writer(file)
                writer.writerow(["mykad"])
                writer.writerows([mykad] for mykad in population.rows)
            env = {
                **os.environ,
                "ROAMSIGN_PROFILE": "production",
                "ROAMSIGN_DATABASE_URL": url,
                "ROAMSIGN_MASTER_KEY_FILE": str(key_file),
                "ROAMSIGN_VAR_DIR": str(work),
                "ROAMSIGN_LOG_LEVEL": "WARNING",
            }
            for run in ("first run", "second run"):
                elapsed, report, _stderr = run_enrol(env, csv_file, batch_size)
                outcomes = check(population, report, second_run=run == "second run")
                applications = count(runtime, RoamingApplication)
                queued = count(runtime, OutboxMessage)
                print(
                    f"[{database}] {run}: {len(report)} rows in {elapsed:.1f} s "
                    f"({len(report) / elapsed:,.0f} rows/s); report correct; "
                    f"{dict(sorted(outcomes.items()))}; "
                    f"{applications} applications, {queued} e-mails queued"
                )
            runtime.close()
        finally:
            if pg is not None:
                pg.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--people", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    random.seed(args.seed)
    for database in ("sqlite", "postgresql") if args.db == "both" else (args.db,):
        bench(database, args.people, args.batch_size)


if __name__ == "__main__":
    main()
