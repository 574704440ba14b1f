"""`python -m app admins ...`: console roles (grant, revoke, list), audited as the CLI's."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

from app.db import unit_of_work
from app.runtime import Runtime
from app.settings import get_settings
from app.validation import mask_mykad, normalise_mykad

if TYPE_CHECKING:
    from app.units import Services

Work = Callable[["Services", datetime], int]

CLI_ACTOR = "cli"


def add_admins_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    command: Callable[..., argparse.ArgumentParser],
) -> None:
    admins = commands.add_parser("admins", help="console administrators").add_subparsers(
        title="admins"
    )
    grant = command(
        admins,
        "grant",
        "let a person sign in to /console/ as JDN or as their agency's administrator",
        cmd_admins_grant,
    )
    grant.add_argument("mykad", type=_mykad)
    grant.add_argument("--role", required=True, choices=["jdn_admin", "agency_admin"])
    grant.add_argument(
        "--agency", help="required for agency_admin: the person's own agency, as registered"
    )
    revoke = command(
        admins,
        "revoke",
        "take a person's console role away (ends their sessions)",
        cmd_admins_revoke,
    )
    revoke.add_argument("mykad", type=_mykad)
    command(admins, "list", "the console's administrators", cmd_admins_list)


def _mykad(text: str) -> str:
    try:
        return normalise_mykad(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _run(work: Work) -> int:
    from app.units import Services

    runtime = Runtime.build(get_settings())
    with unit_of_work(runtime.sessions) as session:
        return work(Services(runtime, session), runtime.clock.now())


def cmd_admins_grant(args: argparse.Namespace) -> int:
    def work(services: Services, now: datetime) -> int:
        row = services.console_admins.grant(args.mykad, args.role, args.agency, now, CLI_ACTOR)
        scope = f" of agency {row.agency}" if row.agency else ""
        print(f"{mask_mykad(args.mykad)} is now {row.role}{scope}")
        return 0

    return _run(work)


def cmd_admins_revoke(args: argparse.Namespace) -> int:
    def work(services: Services, now: datetime) -> int:
        services.console_admins.revoke(args.mykad, now, CLI_ACTOR)
        print(f"{mask_mykad(args.mykad)} holds no console role now")
        return 0

    return _run(work)


def cmd_admins_list(_args: argparse.Namespace) -> int:
    def work(services: Services, now: datetime) -> int:
        del now
        for grant in services.console_admins.grants():
            granted = grant.granted_at.strftime("%Y-%m-%dT%H:%M:%SZ")
            print(
                f"{grant.mykad}  {grant.role:<12} {grant.agency or '-':<12} {grant.name}  "
                f"(granted {granted} by {grant.granted_by})"
            )
        return 0

    return _run(work)
