"""The RFC 9457 problem document, and the `responses=` each route declares for openapi.yaml."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from app.errors import (
    BadRequest,
    DomainError,
    PayloadTooLarge,
    UnsupportedMediaType,
    ValidationFailed,
)


class FieldProblem(BaseModel):
    pointer: str = Field(description="JSON pointer to the offending field")
    detail: str


class Problem(BaseModel):
    type: str
    title: str
    status: int
    detail: str
    code: str = Field(description="Stable machine-readable error code")
    errors: list[FieldProblem] | None = Field(default=None, description="With validation_error")
    attempts_remaining: int | None = Field(default=None, description="With authorization_failed")


BODY_PROBLEMS: tuple[type[DomainError], ...] = (
    BadRequest,
    PayloadTooLarge,
    UnsupportedMediaType,
    ValidationFailed,
)


def problem_responses(*errors: type[DomainError]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for the problems a route can answer, grouped by status."""
    by_status: dict[int, list[type[DomainError]]] = {}
    for error in errors:
        by_status.setdefault(error.status, []).append(error)
    responses: dict[int | str, dict[str, Any]] = {}
    for status, group in sorted(by_status.items()):
        codes = ", ".join(f"`{error.code}`" for error in group)
        responses[status] = {
            "model": Problem,
            "description": f"{' / '.join(error.title for error in group)} ({codes})",
        }
    return responses


def response_links(status: int, parameter: str, pointer: str, **operations: str) -> dict[str, Any]:
    """`openapi_extra` for OpenAPI links: the id in this response (at JSON `pointer`) is the
    `parameter` of each named operation (link name -> operationId); clients and stateful
    testers follow them, e.g. from a new signing request to its GET, DELETE and signature."""
    return {
        "responses": {
            str(status): {
                "links": {
                    name: {
                        "operationId": operation_id,
                        "parameters": {parameter: f"$response.body#{pointer}"},
                    }
                    for name, operation_id in operations.items()
                }
            }
        }
    }


# Bodies read as a dependency (`app.deps.JsonBody`, the one-unit routes of app.routing): FastAPI
# knows nothing of them, so `json_request_body` documents each and `body_schemas` adds its schema
# to the document's components, as FastAPI would for a body parameter.
_BODY_MODELS: dict[str, type[BaseModel]] = {}


def json_request_body(model: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra` for a required JSON body of `model`, read by `app.deps.JsonBody`."""
    _BODY_MODELS[model.__name__] = model
    return {
        "requestBody": {
            "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}
            },
            "required": True,
        }
    }


def body_schemas() -> dict[str, Any]:
    """The component schemas of the bodies `json_request_body` documented."""
    schemas: dict[str, Any] = {}
    for name, model in _BODY_MODELS.items():
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[name] = schema
    return schemas
