"""`/docs` (Swagger UI) and `/redoc`, each with a Content-Security-Policy that admits exactly what its page loads.

Both pages are FastAPI's own, which load their code from jsDelivr's CDN. The policy names each file by its full URL
(not the whole CDN), the Swagger page's one inline script by its SHA-256 hash, and the same-origin fetch of
`/openapi.json` (and Swagger's "Try it out"). Both UIs style their elements inline at run time (React style props,
ReDoc's styled-components), so `style-src` needs `'unsafe-inline'`; ReDoc runs its search index in a Web Worker
made from a `blob:` URL. ReDoc is served without Google Fonts, so no font host is admitted. With
`IMAGEGEN_API_DOCS=false` neither page exists (404); `/openapi.json` stays, for clients and tools.
"""

from __future__ import annotations

import base64
import hashlib
import re

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse

SWAGGER_JS = "https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui-bundle.js"
SWAGGER_CSS = "https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui.css"
REDOC_JS = "https://cdn.jsdelivr.net/npm/redoc@2/bundles/redoc.standalone.js"
FAVICON = "https://fastapi.tiangolo.com/img/favicon.png"

_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.S)
_COMMON = ("base-uri 'none'", "form-action 'none'", "frame-ancestors 'none'", "object-src 'none'")


def _inline_script_hashes(html: str) -> str:
    digests = (hashlib.sha256(body.encode()).digest() for body in _INLINE_SCRIPT.findall(html))
    return " ".join(f"'sha256-{base64.b64encode(digest).decode()}'" for digest in digests)


def swagger_policy(html: str) -> str:
    """The CSP of the Swagger UI page `html`."""
    return "; ".join(
        (
            "default-src 'none'",
            f"script-src {_inline_script_hashes(html)} {SWAGGER_JS}",
            f"style-src 'unsafe-inline' {SWAGGER_CSS}",
            f"img-src 'self' data: {FAVICON}",  # the stylesheet's icons are data: SVGs
            "connect-src 'self'",  # the OpenAPI document and "Try it out"
            *_COMMON,
        )
    )


def redoc_policy() -> str:
    """The CSP of the ReDoc page."""
    return "; ".join(
        (
            "default-src 'none'",
            f"script-src {REDOC_JS}",
            "style-src 'unsafe-inline'",  # the page's own <style> and ReDoc's styled-components
            f"img-src 'self' data: {FAVICON}",
            "connect-src 'self'",  # the OpenAPI document
            "worker-src blob:",  # ReDoc's search index
            *_COMMON,
        )
    )


def _text(page: HTMLResponse) -> str:
    return bytes(page.body).decode()


_HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}


def install_api_docs(app: FastAPI, openapi_url: str = "/openapi.json") -> None:
    """Serve `/docs` and `/redoc` with their policies (the app is built with FastAPI's own docs off)."""
    swagger = _text(
        get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{app.title} - Swagger UI",
            swagger_js_url=SWAGGER_JS,
            swagger_css_url=SWAGGER_CSS,
            swagger_favicon_url=FAVICON,
            oauth2_redirect_url=None,  # the API takes bearer keys, no OAuth2 flow
            swagger_ui_parameters={"validatorUrl": None},  # no badge fetched from validator.swagger.io
        )
    )
    redoc = _text(
        get_redoc_html(
            openapi_url=openapi_url,
            title=f"{app.title} - ReDoc",
            redoc_js_url=REDOC_JS,
            redoc_favicon_url=FAVICON,
            with_google_fonts=False,
        )
    )
    swagger_headers = {"Content-Security-Policy": swagger_policy(swagger), **_HEADERS}
    redoc_headers = {"Content-Security-Policy": redoc_policy(), **_HEADERS}

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return HTMLResponse(swagger, headers=swagger_headers)

    @app.get("/redoc", include_in_schema=False)
    async def redoc_ui() -> HTMLResponse:
        return HTMLResponse(redoc, headers=redoc_headers)
