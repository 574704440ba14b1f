"""The language switch: BM (the default) or English, remembered in a cookie."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse

from app.routers.pages.i18n import LANGUAGES
from app.routers.pages.web import LANGUAGE_COOKIE, set_cookie

router = APIRouter(include_in_schema=False)


@router.get("/lang/{language}")
async def choose_language(request: Request, language: str) -> RedirectResponse:
    back = request.query_params.get("next", "/me/")
    # Only a path of this site: never an open redirect.
    if not back.startswith("/") or back.startswith("//") or "\\" in back:
        back = "/me/"
    response = RedirectResponse(back, status_code=303)
    if language in LANGUAGES:
        set_cookie(response, LANGUAGE_COOKIE, language, max_age=365 * 24 * 3600)
    return response
