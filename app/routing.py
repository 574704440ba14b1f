"""Route classes: how a router's routes run, and which wire format their errors speak.

`CscRoute` marks the CSC API's routes: their errors are the CSC API's shape, every other route's
RFC 9457 problems (`error_format` answers for a request).

`OneUnitRoute` runs a route in one unit of work on one worker thread. A usual route takes three
thread hops (the `authenticate` dependency, the endpoint, the commit in `get_session`), with
FastAPI's dependency solving, body validation and response serialisation around them; for the
two calls of every signing flow that framework work cost about as much as the domain work
(bench/breakdown.py). Its endpoints are written like any other (typed dependencies, a typed
body, one service call); the route resolves them itself, in one hop, and serialises its response
model once. `OneUnitDispatch` hands their requests to them without the router's walk through
every route of the application.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from fastapi.dependencies.models import Dependant
from fastapi.responses import Response
from fastapi.routing import APIRoute, iter_route_contexts
from pydantic import BaseModel
from starlette._exception_handler import wrap_app_handling_exceptions
from starlette._utils import get_route_path
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from app.db import unit_of_work
from app.deps import JsonBody, api_key_scheme, get_runtime, get_services, get_session
from app.errors import PROBLEMS, ErrorFormat
from app.runtime import Runtime
from app.schemas.csc import CSC_ERRORS
from app.schemas.problem import json_request_body
from app.units import Services


class CscRoute(APIRoute):
    """A route of the CSC API: its errors are `{"error", "error_description"}`."""

    error_format: ClassVar[ErrorFormat] = CSC_ERRORS


def error_format(scope: Scope) -> ErrorFormat:
    """The wire format of a request's errors: its route's (the router's route class says).

    A request no route answers (an unknown path, a body refused before routing) speaks the
    format of the routers mounted over its path: `app.state.error_formats`, pairs of a path
    prefix and a format (app.main)."""
    route = scope.get("route")
    if route is not None:
        found: ErrorFormat = getattr(route, "error_format", PROBLEMS)
        return found
    return error_format_for_path(scope["app"], scope["path"])


def error_format_for_path(app: Any, path: str) -> ErrorFormat:
    for prefix, mounted in getattr(app.state, "error_formats", ()):
        if path.startswith(prefix):
            found: ErrorFormat = mounted
            return found
    return PROBLEMS


class OneUnitRoute(APIRoute):
    """Reads the body, waits for a database slot (as `get_session`), then on one worker thread
    opens the unit of work, resolves the endpoint's dependencies in their order, calls it and
    commits.

    Its body is a dependency (`app.deps.JsonBody`), so the refusals keep the order of the
    endpoint's parameters: 401 and 403 (the caller), a 404 (the caller's own request), then the
    body's 400 or 422, even for a body that is not JSON. The endpoint is a plain `def` that
    returns its response model; its dependencies must not wait (no `await` that suspends).
    """

    def __init__(self, path: str, endpoint: Callable[..., Any], **options: Any) -> None:
        super().__init__(path, endpoint, **options)
        self.json_body = _json_body_of(self.dependant)
        if self.json_body is not None:
            # FastAPI knows no body parameter here: the body is documented as one.
            self.openapi_extra = {
                **json_request_body(self.json_body.model),
                **(self.openapi_extra or {}),
            }

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        dependant = self.dependant
        _check_supported(dependant)
        if inspect.iscoroutinefunction(dependant.call):
            raise TypeError(f"{self.name}: a one-unit endpoint is a plain def")
        has_body = _json_body_of(dependant) is not None
        status = self.status_code or 200

        def run(request: Request, runtime: Runtime) -> Any:
            with unit_of_work(runtime.sessions) as session:
                resolved: dict[Any, Any] = {
                    get_runtime: runtime,
                    get_session: session,
                    get_services: Services(runtime, session),
                    # Documents the API key only: `authenticate` reads the header itself.
                    api_key_scheme: None,
                }
                values = _solve(dependant, request, resolved)
                assert dependant.call is not None
                return dependant.call(**values)

        async def handler(request: Request) -> Response:
            if has_body or request.method == "POST":
                # Read here, so that the body dependency (JsonBody, or the DER bodies of
                # app/routers/evidence.py) finds it without waiting.
                await request.body()
            runtime: Runtime = request.app.state.runtime
            async with runtime.database_slots():
                result = await run_in_threadpool(run, request, runtime)
            if isinstance(result, Response):
                return result  # a protocol's own bytes (app/routers/evidence.py)
            if not isinstance(result, BaseModel):
                raise TypeError(f"{self.name} must return its response model")
            return Response(
                result.model_dump_json(), status_code=status, media_type="application/json"
            )

        self.one_unit_handler = handler
        return handler

    async def handle_one_unit(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answers a request `OneUnitDispatch` routed here, its errors rendered by the
        application's handlers (`scope["starlette.exception_handlers"]`) as the router's would."""
        request = Request(scope, receive, send)

        async def respond(scope: Scope, receive: Receive, send: Send) -> None:
            response = await self.one_unit_handler(request)
            await response(scope, receive, send)

        await wrap_app_handling_exceptions(respond, request)(scope, receive, send)


def _solve(dependant: Dependant, request: Request, resolved: dict[Any, Any]) -> dict[str, Any]:
    """The values of `dependant`'s parameters, by name: its sub-dependencies in their order,
    each called once per unit (FastAPI caches them within a request), then its path
    parameters."""
    values: dict[str, Any] = {}
    for name in (dependant.request_param_name, dependant.http_connection_param_name):
        if name:
            values[name] = request
    for sub in dependant.dependencies:
        if sub.call in resolved:
            value = resolved[sub.call]
        else:
            assert sub.call is not None
            value = sub.call(**_solve(sub, request, resolved))
            if inspect.iscoroutine(value):
                value = _finished(value)
            resolved[sub.call] = value
        if sub.name is not None:
            values[sub.name] = value
    for field in dependant.path_params:
        values[field.name] = request.path_params[field.alias]
    return values


def _finished(coroutine: Coroutine[Any, Any, Any]) -> Any:
    """The result of an `async def` dependency that returns without waiting (most build or
    check something: FastAPI runs them on the event loop for that reason)."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    coroutine.close()
    raise RuntimeError("a dependency of a one-unit route waited for something")


def _check_supported(dependant: Dependant) -> None:
    unsupported = (
        dependant.query_params
        or dependant.header_params
        or dependant.cookie_params
        or dependant.body_params
        or dependant.response_param_name
        or dependant.background_tasks_param_name
        or dependant.security_scopes_param_name
        or dependant.websocket_param_name
        or any(field.field_info.annotation is not str for field in dependant.path_params)
    )
    if unsupported:
        raise TypeError(
            f"{dependant.call}: a one-unit route takes dependencies (its body is one: "
            "app.deps.JsonBody), the Request and str path parameters"
        )
    for sub in dependant.dependencies:
        if inspect.isgeneratorfunction(sub.call) or inspect.isasyncgenfunction(sub.call):
            if sub.call is not get_session:
                raise TypeError(f"{sub.call}: a one-unit route takes no yield dependency")
            continue
        _check_supported(sub)


def _json_body_of(dependant: Dependant) -> JsonBody[Any] | None:
    for sub in dependant.dependencies:
        if isinstance(sub.call, JsonBody):
            return sub.call
        found = _json_body_of(sub)
        if found is not None:
            return found
    return None


class OneUnitDispatch:
    """Pure ASGI, the innermost middleware: sends a request for a `OneUnitRoute` straight to it.

    The router finds a route by trying every route of the application in order, through the
    included routers, and matches the one it found twice; for the two calls of a signing flow
    that cost more than all the middleware together. This table answers with the route the
    router would choose: a one-unit route whose path and method match is taken only when no
    route before it could match the same path (`_Table`); every other request goes on to the
    router. Errors go to the application's exception handlers, as from the router.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._table: _Table | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        table = self._table
        if table is None:
            table = self._table = _Table.of(scope["app"])
        found = table.find(scope["method"], get_route_path(scope))
        if found is None:
            await self.app(scope, receive, send)
            return
        route, path_params = found
        scope["router"] = scope["app"].router
        scope["endpoint"] = route.endpoint
        scope["path_params"] = path_params
        scope["route"] = route
        scope["starlette.exception_handlers"] = table.exception_handlers
        await route.handle_one_unit(scope, receive, send)


class _Table:
    """The application's routes in the router's order, and for each one-unit route the routes
    before it whose paths could overlap its own (one's literal start is a prefix of the
    other's): only they could be chosen first for a path it matches."""

    def __init__(self, routes: Sequence[_Entry], exception_handlers: tuple[Any, Any]) -> None:
        self.exception_handlers = exception_handlers
        self.candidates: list[tuple[_Entry, list[_Entry]]] = [
            (entry, [other for other in routes[:index] if entry.may_overlap(other)])
            for index, entry in enumerate(routes)
            if entry.route is not None
        ]

    @classmethod
    def of(cls, app: Any) -> _Table:
        handlers = {
            key: value
            for key, value in app.exception_handlers.items()
            if key not in (500, Exception)
        }
        # The handlers as the application's ExceptionMiddleware holds them.
        errors = ExceptionMiddleware(app, handlers=handlers)
        exception_handlers = (errors._exception_handlers, errors._status_handlers)
        routes = []
        for context in iter_route_contexts(app.routes):
            original = context.original_route
            regex = getattr(context, "path_regex", None)
            if not isinstance(original, Route | Mount) or not isinstance(regex, re.Pattern):
                return cls([], exception_handlers)  # a route this table cannot read: none taken
            if isinstance(original, Mount):
                # A mount matches its path and everything under it, whatever the method.
                routes.append(_Entry(regex, None, None, f"{context.path}/"))
                continue
            hot = original if isinstance(original, OneUnitRoute) else None
            literal = str(context.path).split("{", 1)[0]
            routes.append(_Entry(regex, frozenset(context.methods or ()) or None, hot, literal))
        return cls(routes, exception_handlers)

    def find(self, method: str, path: str) -> tuple[OneUnitRoute, dict[str, Any]] | None:
        for entry, rivals in self.candidates:
            match = entry.regex.match(path)
            if match is None or not entry.admits(method):
                continue
            if any(other.regex.match(path) and other.admits(method) for other in rivals):
                return None  # the router chooses an earlier route: let it
            route = entry.route
            assert route is not None
            params = {
                key: route.param_convertors[key].convert(value)
                for key, value in match.groupdict().items()
            }
            return route, params
        return None


@dataclass(frozen=True)
class _Entry:
    regex: re.Pattern[str]
    methods: frozenset[str] | None  # None: any method
    route: OneUnitRoute | None
    literal: str  # the path up to its first parameter

    def admits(self, method: str) -> bool:
        return self.methods is None or method in self.methods

    def may_overlap(self, other: _Entry) -> bool:
        return self.literal.startswith(other.literal) or other.literal.startswith(self.literal)
