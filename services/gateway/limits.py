"""The request body cap: past it the gateway answers 413 in its own JSON shape, counted like any refusal.

Enforced where the body is read (after routing), so the refusal carries its route label; a declared
Content-Length over the cap is refused before a byte is read, a chunked body as soon as it passes the cap.
(Starlette's own limiter would answer in plain text, bypassing the gateway's error handlers.)
"""

from __future__ import annotations

from starlette.exceptions import HTTPException

LIMIT_SCOPE_KEY = "pdo.max_body_bytes"


class BodyLimitMiddleware:
    def __init__(self, app, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope[LIMIT_SCOPE_KEY] = self.max_bytes
        declared = _content_length(scope)
        seen = 0

        async def limited_receive():
            nonlocal seen
            if declared is not None and declared > self.max_bytes:
                raise HTTPException(413)
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise HTTPException(413)
            return message

        await self.app(scope, limited_receive, send)


def _content_length(scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
