"""The console's bulk move across server processes, over ASGI: a file uploaded to one app is
followed and its report downloaded from another (as `serve --workers N` sends a browser's
requests to any worker); a job whose process stopped is shown as interrupted, with its rows
done so far and the advice to upload the same file again."""

from __future__ import annotations

import asyncio
import csv
import io
from typing import Any

import pytest

from app.clock import FrozenClock
from app.db import unit_of_work
from app.runtime import Runtime
from app.services.lifecycle.applications import ApplicationService
from app.services.web.console_enrolments import STALE_AFTER
from app.units import Services
from tests.api.console_steps import console_browser, csrf_of, grant, sign_in
from tests.factories import Factory


async def test_a_job_uploaded_to_one_process_is_followed_from_another(
    runtime: Runtime, factory: Factory
) -> None:
    jdn = factory.person()
    grant(factory, jdn, "jdn_admin")
    movers = [factory.person(email=f"p{n}@jdn.gov.my", roaming=False) for n in range(2)]
    upload = "mykad\n" + "".join(f"{p.mykad}\n" for p in movers)
    async with console_browser(runtime) as first, console_browser(runtime) as second:
        await sign_in(first, runtime, jdn)
        token = await csrf_of(first, "/console/enrolments")
        started = await first.post(
            "/console/enrolments", data={"csrf": token}, files={"csv": ("a.csv", upload.encode())}
        )
        assert started.status_code == 303, started.text
        job = started.headers["location"]
        second.cookies.update(first.cookies)  # the same browser, answered by another worker
        progress: dict[str, Any] = {}
        for _ in range(500):
            progress = (await second.get(f"{job}/progress")).json()
            if progress["finished"]:
                break
            await asyncio.sleep(0.01)
        assert progress == {
            "found": True,
            "done": 2,
            "total": 2,
            "status": "finished",
            "finished": True,
            "failed": False,
            "interrupted": False,
            "counts": {"enrolled": 2},
        }
        page = await second.get(job)
        assert page.status_code == 200 and "Selesai." in page.text
        report = await second.get(f"{job}/report.csv")
        rows = list(csv.reader(io.StringIO(report.text)))
        assert [row[:2] for row in rows] == [
            ["mykad", "outcome"],
            *([p.mykad, "enrolled"] for p in movers),
        ]


async def test_a_job_whose_process_stopped_is_shown_interrupted(
    runtime: Runtime, factory: Factory, clock: FrozenClock
) -> None:
    jdn = factory.person()
    grant(factory, jdn, "jdn_admin")
    movers = [factory.person(email=f"p{n}@jdn.gov.my", roaming=False) for n in range(2)]
    now = clock.now()
    with unit_of_work(runtime.sessions) as session:
        jobs = Services(runtime, session).console_enrolments
        job_id = jobs.start(jdn.user_id, "console:test", 2, now)
    with unit_of_work(runtime.sessions) as session:
        jobs = Services(runtime, session).console_enrolments
        jobs.enrol_batch(job_id, "console:test", [movers[0].mykad], now)
    job = f"/console/enrolments/{job_id}"
    async with console_browser(runtime) as web:
        await sign_in(web, runtime, jdn)
        running = await web.get(job)
        assert 'http-equiv="refresh"' in running.text and "report.csv" not in running.text
        clock.advance(STALE_AFTER.total_seconds())
        progress = (await web.get(f"{job}/progress")).json()
        assert (progress["status"], progress["done"], progress["finished"]) == (
            "interrupted",
            1,
            True,
        )
        web.cookies.set("rs_lang", "en", domain="roamsign.test")
        page = (await web.get(job)).text
        assert "the server process running it has ended" in page
        assert "Upload the same file again to go on: it is safe" in page
        assert 'value="1"' in page and "report.csv" in page
        report = await web.get(f"{job}/report.csv")
        assert list(csv.reader(io.StringIO(report.text)))[1][:2] == [movers[0].mykad, "enrolled"]


async def test_a_batch_that_fails_stops_the_job_as_failed(
    runtime: Runtime, factory: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    jdn = factory.person()
    grant(factory, jdn, "jdn_admin")

    def broken(*_args: object) -> None:
        raise RuntimeError("the database went away")

    monkeypatch.setattr(ApplicationService, "enrol", broken)
    async with console_browser(runtime) as web:
        await sign_in(web, runtime, jdn)
        token = await csrf_of(web, "/console/enrolments")
        started = await web.post(
            "/console/enrolments", data={"csrf": token}, files={"csv": ("a.csv", b"850101145555")}
        )
        job = started.headers["location"]
        progress: dict[str, Any] = {}
        for _ in range(500):
            progress = (await web.get(f"{job}/progress")).json()
            if progress["finished"]:
                break
            await asyncio.sleep(0.01)
        assert (progress["status"], progress["failed"], progress["done"]) == ("failed", True, 0)
        assert "Terhenti kerana ralat" in (await web.get(job)).text
