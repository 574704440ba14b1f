"""`python -m app ...`: the operator's commands (contract, "Running it")."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from sqlalchemy.orm import Session

from app.cli_admins import add_admins_commands
from app.cli_keys import add_keys_commands
from app.db import unit_of_work
from app.errors import ConfigurationError, DomainError
from app.models import Role
from app.runtime import Runtime
from app.services.clients import Caller
from app.services.lifecycle.credentials import REVOCATION_REASONS
from app.settings import Profile, Settings, get_settings
from app.validation import check_display_text, normalise_mykad

if TYPE_CHECKING:
    from app.models import Credential
    from app.services.lifecycle.bulk_enrolment import EnrolmentResult
    from app.units import Services

CLI_ACTOR = "cli"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    try:
        result: int = args.run(args)
    except (DomainError, ConfigurationError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return result


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m app", description="roamsign operations")
    commands = parser.add_subparsers(title="commands")

    db = commands.add_parser("db", help="database schema").add_subparsers(title="db")
    _command(db, "upgrade", "apply every migration", cmd_db_upgrade)
    down = _command(db, "downgrade", "revert to a revision", cmd_db_downgrade)
    down.add_argument("revision")

    ca = commands.add_parser("ca", help="certification authority").add_subparsers(title="ca")
    _command(
        ca,
        "init",
        "create the root and issuing CA, the TSA and the OCSP responder (idempotent)",
        cmd_ca_init,
    )
    _command(
        ca,
        "upgrade",
        "bring an existing CA up to date: the issuing CA's revocation pointers, the TSA and "
        "OCSP responder if missing, a responder certificate near its end (idempotent)",
        cmd_ca_upgrade,
    )

    clients = commands.add_parser("clients", help="API clients").add_subparsers(title="clients")
    create = _command(clients, "create", "create a client; prints its key last", cmd_clients_create)
    # A client's name is shown to people (the requesting system, in the OTP e-mail).
    create.add_argument("name", type=_display_text)
    create.add_argument(
        "--role", required=True, choices=["signer", "portal", "agency_admin", "jdn_admin"]
    )
    create.add_argument("--agency", type=_display_text)
    revoke = _command(clients, "revoke", "revoke a client's key", cmd_clients_revoke)
    revoke.add_argument("name")
    rotate = _command(
        clients, "rotate", "replace a client's key; prints it last", cmd_clients_rotate
    )
    rotate.add_argument("name")

    users = commands.add_parser("users", help="people").add_subparsers(title="users")
    user = _command(users, "create", "register a person", cmd_users_create)
    user.add_argument("--mykad", required=True)
    user.add_argument("--name", required=True)
    user.add_argument("--email")
    user.add_argument("--phone")
    user.add_argument("--agency", required=True)

    _add_credential_commands(commands)
    _add_enrol_command(commands)

    serve = commands.add_parser("serve", help="serve the API")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument(
        "--port", type=int, help="default: ROAMSIGN_PORT (8000), the image's health check's too"
    )
    serve.add_argument("--workers", type=int, default=1)
    serve.set_defaults(run=cmd_serve)

    audit = commands.add_parser("audit", help="audit trail").add_subparsers(title="audit")
    verify = _command(
        audit,
        "verify",
        "check the MAC chains; exit 1 naming the first broken event",
        cmd_audit_verify,
    )
    verify.add_argument(
        "--checkpoints",
        type=Path,
        metavar="DIR",
        help="also check the trail against the signed checkpoints in DIR (none cut short, "
        "none missing, every signature right)",
    )
    _command(
        audit,
        "checkpoint",
        "write a signed checkpoint of every chain's head now (ROAMSIGN_AUDIT_CHECKPOINT_DIR)",
        cmd_audit_checkpoint,
    )

    jobs = commands.add_parser("jobs", help="background jobs").add_subparsers(title="jobs")
    _command(
        jobs, "run", "run the due jobs once (expiry notices), then e-mail delivery", cmd_jobs_run
    )

    add_keys_commands(commands, _command)
    add_admins_commands(commands, _command)

    demo = commands.add_parser("demo", help="set up the demo (used by `make run`)")
    demo.set_defaults(run=cmd_demo)
    return parser


def _add_credential_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    credentials = commands.add_parser("credentials", help="roaming credentials").add_subparsers(
        title="credentials"
    )
    issue = _command(
        credentials,
        "issue",
        "issue an active roaming credential (PIN on stdin)",
        cmd_credentials_issue,
    )
    issue.add_argument("mykad")
    issue.add_argument("--key-algorithm", choices=["ecdsa-p256", "rsa-2048", "rsa-3072"])
    listing = _command(
        credentials, "list", "a person's media (token, softcert, roaming)", cmd_credentials_list
    )
    listing.add_argument("mykad")
    record = _command(
        credentials, "record-token", "record a token a person holds", cmd_credentials_record
    )
    record.add_argument("mykad")
    record.add_argument("--serial", required=True)
    record.add_argument("--expires-at", required=True, help="RFC 3339, e.g. 2027-06-30T23:59:59Z")
    record.add_argument("--medium", choices=["token", "softcert"], default="token")
    unlock = _command(
        credentials, "unlock", "unlock a credential locked by wrong PINs", cmd_credentials_unlock
    )
    unlock.add_argument("credential_id")
    revoke_credential = _command(
        credentials, "revoke", "revoke a roaming certificate", cmd_credentials_revoke
    )
    revoke_credential.add_argument("credential_id")
    revoke_credential.add_argument("--reason", required=True, choices=REVOCATION_REASONS)
    renew = _command(
        credentials,
        "renew",
        "new key and certificate; the person sets the PIN by e-mail; prints the new id last",
        cmd_credentials_renew,
    )
    renew.add_argument("credential_id")
    renew.add_argument("--key-algorithm", choices=["ecdsa-p256", "rsa-2048", "rsa-3072"])


def _add_enrol_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    enrol = commands.add_parser(
        "enrol",
        help="move token users to roaming: open an application per MyKad of a CSV file",
        description=(
            "Open a roaming application (and queue its verification e-mail) for every MyKad "
            "of the CSV file (a `mykad` column, or the first column), in batches; a progress "
            "bar on stderr, the per-person report as CSV on stdout (or --report). Safe to run "
            "again: nobody gets a second application or e-mail."
        ),
    )
    enrol.add_argument("--csv", required=True, type=Path, dest="csv_file")
    enrol.add_argument(
        "--batch-size", type=_batch_size, default=500, metavar="N", help="people per transaction"
    )
    enrol.add_argument("--report", type=Path, help="write the report here instead of stdout")
    enrol.set_defaults(run=cmd_enrol)


def _display_text(text: str) -> str:
    try:
        return check_display_text(text.strip(), max_length=100)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _batch_size(text: str) -> int:
    size = int(text)
    if not 1 <= size <= 1000:
        raise argparse.ArgumentTypeError("the batch size is 1 to 1000")
    return size


def _command(
    group: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    help_text: str,
    run: Callable[[argparse.Namespace], int],
) -> argparse.ArgumentParser:
    parser = group.add_parser(name, help=help_text)
    parser.set_defaults(run=run)
    return parser


def _runtime() -> Runtime:
    return Runtime.build(get_settings())


def _in_transaction(runtime: Runtime, work: Callable[[Session], int]) -> int:
    with unit_of_work(runtime.sessions) as session:
        return work(session)


def _services(runtime: Runtime, session: Session) -> Services:
    # Imported here, as each command imports its own: `python -m app --help` stays fast.
    from app.units import Services

    return Services(runtime, session)


def cmd_db_upgrade(_args: argparse.Namespace) -> int:
    from app.migrate import upgrade

    upgrade(get_settings().database_url)
    print("database schema is up to date")
    return 0


def cmd_db_downgrade(args: argparse.Namespace) -> int:
    from app.migrate import downgrade

    downgrade(get_settings().database_url, args.revision)
    return 0


def cmd_ca_init(_args: argparse.Namespace) -> int:
    runtime = _runtime()

    def work(session: Session) -> int:
        made = _services(runtime, session).provisioning.init(runtime.clock.now())
        print(f"CA created: {', '.join(made)}" if made else "CA already initialised")
        return 0

    return _in_transaction(runtime, work)


def cmd_ca_upgrade(_args: argparse.Namespace) -> int:
    runtime = _runtime()

    def work(session: Session) -> int:
        made = _services(runtime, session).provisioning.upgrade(runtime.clock.now())
        if made:
            print(f"CA upgraded: {', '.join(made)}; restart the servers to use it")
        else:
            print("CA already up to date")
        return 0

    return _in_transaction(runtime, work)


def cmd_clients_create(args: argparse.Namespace) -> int:
    runtime = _runtime()

    def work(session: Session) -> int:
        client, key = _services(runtime, session).clients.create(
            args.name, args.role, args.agency, runtime.clock.now()
        )
        print(f"created client {client.name} ({client.role}); the key is shown once:")
        print(key)
        return 0

    return _in_transaction(runtime, work)


def cmd_clients_revoke(args: argparse.Namespace) -> int:
    runtime = _runtime()

    def work(session: Session) -> int:
        _services(runtime, session).clients.revoke(args.name, runtime.clock.now())
        print(f"revoked client {args.name}")
        return 0

    return _in_transaction(runtime, work)


def cmd_clients_rotate(args: argparse.Namespace) -> int:
    runtime = _runtime()

    def work(session: Session) -> int:
        key = _services(runtime, session).clients.rotate(args.name, runtime.clock.now())
        print(f"rotated client {args.name}; the old key no longer works. New key:")
        print(key)
        return 0

    return _in_transaction(runtime, work)


def cmd_users_create(args: argparse.Namespace) -> int:
    from app.schemas.users import UserCreate

    body = UserCreate(
        mykad=args.mykad, name=args.name, email=args.email, phone=args.phone, agency=args.agency
    )
    runtime = _runtime()

    def work(session: Session) -> int:
        user = _services(runtime, session).people.create(
            mykad=body.mykad,
            name=body.name,
            agency=body.agency,
            email=body.email,
            phone=body.phone,
            now=runtime.clock.now(),
            actor=CLI_ACTOR,
        )
        print(f"registered {user.name}")
        print(user.id)
        return 0

    return _in_transaction(runtime, work)


def cmd_credentials_issue(args: argparse.Namespace) -> int:
    pin = sys.stdin.readline().strip()
    runtime = _runtime()
    mykad = normalise_mykad(args.mykad)

    def work(session: Session) -> int:
        credential = _services(runtime, session).credentials.issue_roaming(
            mykad,
            pin,
            args.key_algorithm or runtime.settings.key_algorithm,
            runtime.clock.now(),
            runtime.settings.certificate_validity_days,
            CLI_ACTOR,
        )
        print(f"issued {credential.key_algorithm} roaming credential")
        print(f"certificate serial {credential.certificate_serial}")
        print(credential.id)
        return 0

    return _in_transaction(runtime, work)


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    settings = get_settings()
    settings.check_production_safety()
    if settings.key_store == "software":
        settings.load_master_key()  # fail here, not in every worker (a token has no file)
    check_key_store(settings)
    if settings.is_sqlite and args.workers > 1:
        raise ConfigurationError("SQLite serves one process: use PostgreSQL for --workers > 1")
    if args.workers > 1:
        # Worker processes start fresh and import prometheus-client after this is set; a single
        # worker runs in this process, whose metrics may already exist, and needs no sharing.
        prepare_metrics_dir(settings)
    uvicorn.run(
        "app.main:build_app_from_environment",
        factory=True,
        host=args.host,
        port=args.port if args.port is not None else settings.port,
        workers=args.workers,
        log_config=None,
        access_log=False,
    )
    return 0


def check_key_store(settings: Settings) -> None:
    """Open the token once before any worker starts: a wrong setting is one line here."""
    if settings.key_store != "pkcs11":
        return
    from app.crypto.pkcs11 import Pkcs11KeyStore

    Pkcs11KeyStore.from_settings(settings).close()


def prepare_metrics_dir(settings: Settings) -> None:
    directory = settings.metrics_dir or settings.var_dir / "metrics" / str(os.getpid())
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True, exist_ok=True)
    # prometheus-client reads this variable itself, in every worker process.
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)


def cmd_audit_verify(args: argparse.Namespace) -> int:
    from app.services.audit.checkpoint import (
        CheckpointKey,
        CheckpointKeyMissing,
        expected_heads,
        read_checkpoints,
    )
    from app.services.audit.verification import verify_audit_trail

    runtime = _runtime()
    directory: Path | None = args.checkpoints
    expected = None
    if directory is not None:
        if not directory.is_dir():
            raise ValueError(f"{directory} is not a directory")
        with runtime.sessions() as session:
            try:
                public_key = CheckpointKey(session, runtime.key_store).verifying_key()
                missing_key = None
            except CheckpointKeyMissing as exc:
                public_key, missing_key = None, str(exc)
        reading = read_checkpoints(directory, public_key)
        problems = list(reading.problems)
        if missing_key is not None and any(directory.glob("audit-checkpoints-*.jsonl")):
            problems.insert(0, missing_key)
        if problems:
            for problem in problems:
                print(f"audit checkpoints BROKEN: {problem}", file=sys.stderr)
            return 1
        expected = expected_heads(reading.checkpoints)
    with runtime.sessions() as session:
        result = verify_audit_trail(session, runtime.keys.audit_mac, checkpoints=expected)
    if result.ok:
        against = (
            f" against {len(reading.checkpoints)} checkpoints" if directory is not None else ""
        )
        print(f"audit trail intact: {result.checked} events checked{against}")
        return 0
    print(f"audit trail BROKEN: {result.first_broken}", file=sys.stderr)
    if result.breaks > 1:
        print(f"({result.breaks} breaks in all)", file=sys.stderr)
    return 1


def cmd_audit_checkpoint(_args: argparse.Namespace) -> int:
    from app.services.audit.checkpoint import take_checkpoint

    runtime = _runtime()
    directory = runtime.settings.audit_checkpoint_dir
    assert directory is not None  # filled in by Settings
    checkpoint = take_checkpoint(
        runtime.sessions, runtime.key_store, directory, runtime.clock.now()
    )
    assert checkpoint is not None
    print(
        f"audit checkpoint: {checkpoint.chains} chains, {checkpoint.events} events, "
        f"{checkpoint.source}"
    )
    return 0


def cmd_jobs_run(_args: argparse.Namespace) -> int:
    from app.services.lifecycle.jobs import job_runner

    runtime = _runtime()
    for job in job_runner(runtime).run_due():
        print(f"{job.name}: {job.outcome}")
    worker = runtime.delivery_worker()
    try:
        report = worker.deliver_due()
    finally:
        worker.close()
    print(f"e-mail delivery: {report}")
    return 0


# The operator at the command line acts as the system administrator (JDN).
CLI_CALLER = Caller(id=CLI_ACTOR, name=CLI_ACTOR, role=Role.JDN_ADMIN, agency=None)


def _print_credential(credential: Credential, now: datetime) -> None:
    from app.services.lifecycle.credentials import effective_status

    serial = credential.certificate_serial or credential.token_serial or "-"
    until = credential.not_after.strftime("%Y-%m-%dT%H:%M:%SZ") if credential.not_after else "-"
    status = effective_status(credential, now)
    print(f"{credential.id}  {credential.medium:<8} {status:<11} serial {serial}  until {until}")


def cmd_credentials_list(args: argparse.Namespace) -> int:
    runtime = _runtime()
    mykad = normalise_mykad(args.mykad)

    def work(session: Session) -> int:
        now = runtime.clock.now()
        credentials = _services(runtime, session).credential_lifecycle
        for credential in credentials.of_person(CLI_CALLER, mykad):
            _print_credential(credential, now)
        return 0

    return _in_transaction(runtime, work)


def cmd_credentials_record(args: argparse.Namespace) -> int:
    from app.models import Medium
    from app.schemas.lifecycle import MediumRecord

    body = MediumRecord(medium=args.medium, serial=args.serial, expires_at=args.expires_at)
    runtime = _runtime()
    mykad = normalise_mykad(args.mykad)

    def work(session: Session) -> int:
        now = runtime.clock.now()
        credential = _services(runtime, session).credential_lifecycle.record_medium(
            CLI_CALLER,
            mykad,
            medium=Medium(body.medium),
            serial=body.serial,
            not_before=None,
            not_after=body.expires_at,
            now=now,
        )
        _print_credential(credential, now)
        print(credential.id)
        return 0

    return _in_transaction(runtime, work)


def cmd_credentials_unlock(args: argparse.Namespace) -> int:
    runtime = _runtime()

    def work(session: Session) -> int:
        now = runtime.clock.now()
        credentials = _services(runtime, session).credential_lifecycle
        _print_credential(credentials.unlock(CLI_CALLER, args.credential_id, now), now)
        return 0

    return _in_transaction(runtime, work)


def cmd_credentials_revoke(args: argparse.Namespace) -> int:
    runtime = _runtime()

    def work(session: Session) -> int:
        now = runtime.clock.now()
        credentials = _services(runtime, session).credential_lifecycle
        _print_credential(credentials.revoke(CLI_CALLER, args.credential_id, args.reason, now), now)
        return 0

    return _in_transaction(runtime, work)


def cmd_credentials_renew(args: argparse.Namespace) -> int:
    runtime = _runtime()

    def work(session: Session) -> int:
        now = runtime.clock.now()
        credentials = _services(runtime, session).credential_lifecycle
        renewed = credentials.renew(CLI_CALLER, args.credential_id, args.key_algorithm, now)
        _print_credential(renewed, now)
        print("the PIN-setup token was e-mailed to the person")
        print(renewed.id)
        return 0

    return _in_transaction(runtime, work)


def cmd_enrol(args: argparse.Namespace) -> int:
    import csv
    import time
    from collections import Counter

    from app.services.lifecycle.enrolment import count_mykads, enrol_in_batches, read_mykads

    if not args.csv_file.is_file():
        print(f"error: no such file: {args.csv_file}", file=sys.stderr)
        return 1
    runtime = _runtime()

    def enrol_batch(batch: list[str]) -> list[EnrolmentResult]:
        with unit_of_work(runtime.sessions) as session:
            applications = _services(runtime, session).applications
            return applications.enrol(CLI_ACTOR, batch, runtime.clock.now())

    total = count_mykads(args.csv_file)
    progress = ProgressBar(total, sys.stderr)
    counts: Counter[str] = Counter()
    started = time.monotonic()
    report_file = args.report.open("w", newline="") if args.report else None
    try:
        report = csv.writer(report_file or sys.stdout)
        report.writerow(["mykad", "outcome", "application_id"])
        for batch in enrol_in_batches(
            enrol_batch, read_mykads(args.csv_file), batch_size=args.batch_size
        ):
            for result in batch:
                report.writerow([result.mykad, result.outcome.value, result.application_id or ""])
                counts[result.outcome.value] += 1
            progress.show(counts.total())
    finally:
        progress.finish()
        if report_file is not None:
            report_file.close()
    elapsed = time.monotonic() - started
    summary = ", ".join(f"{outcome} {count}" for outcome, count in sorted(counts.items()))
    print(f"enrolment done in {elapsed:.1f} s: {summary or 'nobody in the file'}", file=sys.stderr)
    return 0


class ProgressBar:
    """`[#####.....] 5000/10000  50%  812/s` on one line of a terminal; a line per update
    when the stream is not a terminal (a log file)."""

    WIDTH = 30

    def __init__(self, total: int, stream: TextIO) -> None:
        import time

        self._total = total
        self._stream = stream
        self._started = time.monotonic()
        self._interactive = stream.isatty()
        self._shown = False

    def show(self, done: int) -> None:
        import time

        elapsed = max(time.monotonic() - self._started, 1e-6)
        fraction = done / self._total if self._total else 1.0
        filled = int(self.WIDTH * min(fraction, 1.0))
        line = (
            f"[{'#' * filled}{'.' * (self.WIDTH - filled)}] {done}/{self._total} "
            f"{fraction:4.0%} {done / elapsed:,.0f}/s"
        )
        self._stream.write(("\r" + line) if self._interactive else line + "\n")
        self._stream.flush()
        self._shown = True

    def finish(self) -> None:
        if self._interactive and self._shown:
            self._stream.write("\n")
            self._stream.flush()


DEMO_CLIENTS = (
    ("igfmas", "signer", None, "IGFMAS_KEY"),
    ("eperolehan", "signer", None, "EPEROLEHAN_KEY"),
    ("mygpki-portal", "portal", None, "PORTAL_KEY"),
    ("jdn-admin", "jdn_admin", None, "JDN_ADMIN_KEY"),
    ("agency-admin-jdn", "agency_admin", "JDN", "AGENCY_ADMIN_KEY"),
)
DEMO_PERSON = {
    "mykad": "850101145555",
    "name": "Nur Aisyah binti Ahmad",
    "email": "aisyah@jdn.gov.my",
    "phone": "+60123456789",
    "agency": "JDN",
}
DEMO_PIN = "583920"
# The console's demo administrator (JDN): signs in at /console/ with this MyKad, the OTP
# e-mailed to var/mail/, and this PIN.
DEMO_ADMIN = {
    "mykad": "800202145678",
    "name": "Ahmad bin Ismail (Pentadbir JDN)",
    "email": "pentadbir@jdn.gov.my",
    "phone": "+60129876543",
    "agency": "JDN",
}
DEMO_ADMIN_PIN = "274816"


def cmd_demo(_args: argparse.Namespace) -> int:
    """Idempotent demo setup: schema, CA, clients (fresh keys each run), one person with PIN."""
    from app.migrate import upgrade

    settings = get_settings()
    if settings.profile is not Profile.DEMO:
        # It rotates the demo clients' keys and creates a person with a published PIN: never
        # on a real database.
        raise ConfigurationError(
            "`demo` runs only with ROAMSIGN_PROFILE=demo (it rotates API keys and creates a "
            "person with a published PIN)"
        )
    upgrade(settings.database_url)
    runtime = _runtime()
    env_lines = ["ROAMSIGN_URL=http://127.0.0.1:8000"]

    def work(session: Session) -> int:
        now = runtime.clock.now()
        services = _services(runtime, session)
        services.provisioning.init(now)
        clients = services.clients
        for name, role, agency, variable in DEMO_CLIENTS:
            try:
                _client, key = clients.create(name, role, agency, now)
            except DomainError:
                key = clients.rotate(name, now)
            env_lines.append(f"{variable}={key}")
        people = services.people
        for person, pin in ((DEMO_PERSON, DEMO_PIN), (DEMO_ADMIN, DEMO_ADMIN_PIN)):
            if people.find(person["mykad"]) is None:
                people.create(
                    mykad=person["mykad"],
                    name=person["name"],
                    agency=person["agency"],
                    email=person["email"],
                    phone=person["phone"],
                    now=now,
                    actor=CLI_ACTOR,
                )
                services.credentials.issue_roaming(
                    person["mykad"],
                    pin,
                    settings.key_algorithm,
                    now,
                    settings.certificate_validity_days,
                    CLI_ACTOR,
                )
        services.console_admins.grant(DEMO_ADMIN["mykad"], "jdn_admin", None, now, CLI_ACTOR)
        return 0

    _in_transaction(runtime, work)
    env_lines += [
        f"DEMO_MYKAD={DEMO_PERSON['mykad']}",
        f"DEMO_PIN={DEMO_PIN}",
        f"DEMO_ADMIN_MYKAD={DEMO_ADMIN['mykad']}",
        f"DEMO_ADMIN_PIN={DEMO_ADMIN_PIN}",
    ]
    env_file = settings.var_dir / "demo.env"
    env_file.write_text("\n".join(env_lines) + "\n")
    env_file.chmod(0o600)
    print(f"demo ready: keys in {env_file}, e-mail in {settings.var_dir / 'mail'}")
    print(
        f"console: {env_lines[0].split('=', 1)[1]}/console/ as MyKad {DEMO_ADMIN['mykad']}, "
        f"PIN {DEMO_ADMIN_PIN}, the OTP in the newest e-mail of {settings.var_dir / 'mail'}"
    )
    return 0
