"""Route classes: how a router's routes run, and which wire format their errors speak.

`CscRoute` marks the CSC API's routes: their errors are the CSC API's shape, every other route's
RFC 9457 problems (`error_format` answers for a request).

`OneUnitRoute` runs a route in one unit of work on one worker thread. A usual route takes three
thread hops (the `authenticate` dependency, the endpoint, the commit in `get_session`), with
FastAPI's dependency solving, body validation and response serialisation around them; for the
two calls of every signing flow that framework work cost about as much as the domain work
(bench/breakdown.py). Its endpoints are written like any other (typed dependencies, a typed
body, one service call); the route resolves them itself, in one hop.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Coroutine
from typing import Any, ClassVar

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from fastapi.dependencies.models import Dependant
from fastapi.responses import Response
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.types import Scope

from app.db import unit_of_work
from app.deps import JsonBody, get_runtime, get_services, get_session
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

        return handler


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
