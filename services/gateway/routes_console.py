"""GET /console: the console, one static page working only against the gateway's own API.

For deployments without Grafana, and for the people who are not operators. The key pasted in picks the pages
(GET /v1/me): an operator gets charts (/v1/series), pending requests to approve or deny, grants to suspend,
resume or revoke, usage, dead letters and the catalog with who holds grants; a tenant gets its grants, its
usage chart, its statements, its Kafka credentials and a form to request access; an auditor the audit log
with checkpoints and proofs. Charts are drawn by uPlot, vendored at a pinned version. The page, its script and its style sheet are
package data under `pdo/gateway/console/` (no build step, nothing fetched from elsewhere), read once when
the app is made. No key is needed to load the page; the operator pastes an API key into it, which the
page keeps in sessionStorage and sends as `Authorization: Bearer` on every API call.

The page builds its DOM with textContent only (API text such as a request's purpose may be hostile), and
the Content-Security-Policy below admits scripts and styles from the gateway alone, so injected markup
could not run even if it got in.
"""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter
from fastapi.responses import Response

from pdo.core.errors import NotFound

PAGE = "index.html"
# uPlot, the charting library, is vendored at a pinned version (console/vendor/VERSION says which and how).
ASSETS = {
    PAGE: "text/html",
    "console.js": "text/javascript",
    "console.css": "text/css",
    "vendor/uPlot.iife.min.js": "text/javascript",
    "vendor/uPlot.min.css": "text/css",
}
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def console_router() -> APIRouter:
    """Routes serving the console's files, read from the package now."""
    folder = resources.files("pdo.gateway").joinpath("console")
    contents = {name: folder.joinpath(name).read_bytes() for name in ASSETS}
    router = APIRouter(prefix="/console", include_in_schema=False)

    def serve(name: str) -> Response:
        media_type = f"{ASSETS[name]}; charset=utf-8"
        return Response(contents[name], media_type=media_type, headers=HEADERS)

    @router.get("")
    def page() -> Response:
        return serve(PAGE)

    @router.get("/{asset:path}")
    def asset(asset: str) -> Response:
        if asset not in ASSETS:
            raise NotFound(f"the console has no file {asset[:80]!r}", hint="open /console")
        return serve(asset)

    return router
