"""The API documentation: Swagger UI served from roamsign itself (app/static/vendor/, vendored
by `make install` from the npm registry's swagger-ui-dist), so it opens on a network without
the internet."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from app.routers.pages.templating import templates

router = APIRouter(include_in_schema=False)


@router.get("/docs", response_class=HTMLResponse)
async def api_docs(request: Request) -> HTMLResponse:
    return templates.TemplateResponse(
        request, "docs.html", {"openapi_url": request.app.openapi_url}
    )
