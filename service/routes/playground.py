"""`GET /`: the playground, one static HTML page (inline script and style, no build step) with a strict CSP.

The page's inline `<script>` and `<style>` are allowed by their SHA-256 hashes, computed from the file when it is
first served, so the Content-Security-Policy admits nothing else: no other script, no eval, no inline handlers.
"""

from __future__ import annotations

import base64
import hashlib
import re
from functools import lru_cache
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

router = APIRouter(tags=["playground"])

PAGE = Path(__file__).resolve().parent.parent / "static" / "playground.html"

_INLINE = {"script": re.compile(r"<script>(.*?)</script>", re.S), "style": re.compile(r"<style>(.*?)</style>", re.S)}


def _source_hashes(html: str, tag: str) -> str:
    digests = (hashlib.sha256(body.encode()).digest() for body in _INLINE[tag].findall(html))
    return " ".join(f"'sha256-{base64.b64encode(digest).decode()}'" for digest in digests) or "'none'"


def content_security_policy(html: str) -> str:
    """A CSP admitting only this page's own inline script and style, same-origin API calls and images."""
    return "; ".join(
        (
            "default-src 'none'",
            f"script-src {_source_hashes(html, 'script')}",
            f"style-src {_source_hashes(html, 'style')}",
            "img-src 'self' data: blob:",  # result images (blob: after an authenticated fetch), previews (data:)
            "connect-src 'self'",  # fetch and EventSource to this API only
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        )
    )


@lru_cache(maxsize=1)
def _page() -> tuple[str, dict[str, str]]:
    html = PAGE.read_text(encoding="utf-8")
    headers = {
        "Content-Security-Policy": content_security_policy(html),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-cache",
    }
    return html, headers


@router.api_route("/", methods=["GET", "HEAD"], response_class=HTMLResponse, include_in_schema=False)
def playground() -> HTMLResponse:
    """The playground page: a prompt form, live progress and previews, results, cancel."""
    html, headers = _page()
    return HTMLResponse(html, headers=headers)
