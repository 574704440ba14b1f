"""Operations: liveness, readiness and metrics."""

from __future__ import annotations

import gc
import re

import anyio
import httpx

from app.main import create_app
from app.runtime import Runtime


async def test_healthz(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_startup_puts_what_lives_for_ever_out_of_the_collectors_reach(
    runtime: Runtime,
) -> None:
    app = create_app(runtime=runtime, background_workers=False)
    gc.unfreeze()
    try:
        async with app.router.lifespan_context(app):
            # The process's lasting objects (this very app among them) are frozen.
            assert gc.get_freeze_count() > 10_000
    finally:
        gc.unfreeze()


async def test_healthz_answers_while_every_worker_thread_is_taken(
    client: httpx.AsyncClient,
) -> None:
    # Liveness must not depend on the thread pool: a pool busy with slow database calls is
    # no reason to restart a live process.
    limiter = anyio.to_thread.current_default_thread_limiter()
    holders = [object() for _ in range(int(limiter.total_tokens))]
    for holder in holders:
        await limiter.acquire_on_behalf_of(holder)
    try:
        with anyio.fail_after(5):
            response = await client.get("/healthz")
    finally:
        for holder in holders:
            limiter.release_on_behalf_of(holder)
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_checks_the_database_and_key_store(client: httpx.AsyncClient) -> None:
    response = await client.get("/readyz")
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "ready", "database": "ok", "key_store": "ok"}


async def test_metrics_are_prometheus_text(client: httpx.AsyncClient) -> None:
    await client.get("/healthz")
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    names = set(re.findall(r"^# TYPE (roamsign_\w+)", response.text, re.MULTILINE))
    assert {"roamsign_request_duration_seconds", "roamsign_outbox_depth"} <= names
    assert re.search(
        r'^roamsign_request_duration_seconds_count\{[^}]*route="/healthz"',
        response.text,
        re.MULTILINE,
    )
