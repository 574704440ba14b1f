"""The load generator's HTTP clients (`--client`): one aiohttp session, or httpx lanes."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

import aiohttp
import httpx

# Hard caps: nothing waits longer than this, whatever the server does.
REQUEST_TIMEOUT_SECONDS = 30.0


class Answer(Protocol):
    """What the flows read of an answer: `httpx.Response` or `Reply`."""

    @property
    def status_code(self) -> int: ...

    def json(self) -> Any: ...


class HttpClient(Protocol):
    """What the flows call on a client: `httpx.AsyncClient` or `AiohttpClient`."""

    async def get(self, url: str, /) -> Answer: ...

    async def post(self, url: str, /, *, json: Any) -> Answer: ...

    async def send(self, request: httpx.Request, /) -> Answer: ...


class LanePool(Protocol):
    """Lends a client for one request: `Lanes` (httpx) or `AiohttpLanes`."""

    base_url: str

    def client(self) -> AbstractAsyncContextManager[HttpClient]: ...

    async def aclose(self) -> None: ...


class Lanes:
    """`httpx.AsyncClient`s with one connection each, lent out for one request at a time.

    One AsyncClient shared by 32 concurrent requests spends ~6-7 ms of CPU per request in its
    connection pool on this kind of machine, against ~2 ms when each request has a client to
    itself (see encode/httpx#3215): on two shared cores that would be the benchmark measuring
    itself. A lane is made when none is idle, so there are as many as requests in flight.
    `shared=True` (`--client shared`) lends out one client with a big pool instead, for
    comparison.
    """

    def __init__(self, base_url: str, api_key: str | None, *, shared: bool = False) -> None:
        self.base_url = base_url
        # No API key for the devices' own lanes: the app authenticates by its signatures.
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._idle: list[httpx.AsyncClient] = []
        self._all: list[httpx.AsyncClient] = []
        self._shared = self._new(connections=1024) if shared else None

    @contextlib.asynccontextmanager
    async def client(self) -> AsyncIterator[httpx.AsyncClient]:
        if self._shared is not None:
            yield self._shared
            return
        client = self._idle.pop() if self._idle else self._new()
        try:
            yield client
        finally:
            self._idle.append(client)

    def _new(self, connections: int = 1) -> httpx.AsyncClient:
        client = httpx.AsyncClient(
            base_url=self.base_url,
            headers=self._headers,
            timeout=httpx.Timeout(REQUEST_TIMEOUT_SECONDS),
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
        )
        self._all.append(client)
        return client

    async def aclose(self) -> None:
        for client in self._all:
            with contextlib.suppress(Exception):
                await client.aclose()
        self._all.clear()
        self._idle.clear()


class Reply:
    """An aiohttp answer, read whole, with the few parts of `httpx.Response` the flows read."""

    def __init__(self, status: int, body: bytes) -> None:
        self.status_code = status
        self._body = body

    def json(self) -> Any:
        return json.loads(self._body)


class AiohttpClient:
    """One `aiohttp.ClientSession` behind the part of `httpx.AsyncClient`'s API the flows use.

    Its errors are raised as httpx's (timeouts as `httpx.TimeoutException`, the rest as
    `httpx.TransportError`), so the flows count failures alike whichever client runs them.
    Signed device requests are built as `httpx.Request`s (tests.mobile_app signs those) and
    sent as they are: same method, URL, headers and body.
    """

    def __init__(self, base_url: str, headers: dict[str, str], connections: int) -> None:
        self._session = aiohttp.ClientSession(
            base_url=base_url,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_SECONDS),
            connector=aiohttp.TCPConnector(limit=connections),
        )

    async def get(self, url: str, /) -> Reply:
        return await self._call("GET", url)

    async def post(self, url: str, /, *, json: Any) -> Reply:
        return await self._call("POST", url, json=json)

    async def send(self, request: httpx.Request, /) -> Reply:
        headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
        return await self._call(
            request.method, str(request.url), headers=headers, data=request.content or None
        )

    async def _call(self, method: str, url: str, **kwargs: Any) -> Reply:
        try:
            async with self._session.request(method, url, **kwargs) as response:
                return Reply(response.status, await response.read())
        except TimeoutError as exc:
            raise httpx.ReadTimeout(f"{method} {url}: no answer in time") from exc
        except aiohttp.ClientError as exc:
            raise httpx.TransportError(f"{method} {url}: {type(exc).__name__}") from exc

    async def aclose(self) -> None:
        await self._session.close()


class AiohttpLanes:
    """`--client aiohttp`: one aiohttp session (a pool of keep-alive connections) for every
    request in flight. Its client costs ~0.08 ms of CPU a request here, against ~0.5 ms for an
    httpx lane (measured against a bare uvicorn app, 32 in flight), so the load generator takes
    less of the cores it shares with the server and `/healthz` measures the server more than
    the client."""

    def __init__(self, base_url: str, api_key: str | None, connections: int) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.base_url, self._headers, self._connections = base_url, headers, connections
        self._client: AiohttpClient | None = None

    @contextlib.asynccontextmanager
    async def client(self) -> AsyncIterator[AiohttpClient]:
        if self._client is None:  # made inside the running loop, as aiohttp requires
            self._client = AiohttpClient(self.base_url, self._headers, self._connections)
        yield self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def problem_code(response: Answer) -> str:
    with contextlib.suppress(ValueError, AttributeError):
        return str(response.json().get("code", "-"))
    return "-"


CLIENTS = ("lanes", "shared", "aiohttp")


def make_lanes(kind: str, base_url: str, api_key: str | None, in_flight: int) -> LanePool:
    """The load generator's HTTP client (`--client`): see `Lanes` and `AiohttpLanes`."""
    if kind == "aiohttp":
        return AiohttpLanes(base_url, api_key, connections=in_flight)
    return Lanes(base_url, api_key, shared=kind == "shared")
