"""Errors pdo shows to people: each says what went wrong and what to do about it."""


class PdoError(Exception):
    """A failure the user can act on; the CLI prints it without a traceback and exits non-zero."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}\n  hint: {self.hint}" if self.hint else self.message


class InvalidInput(PdoError):
    """The caller sent something malformed or inconsistent (HTTP 422); nothing was written."""


class NotFound(PdoError):
    """What the caller named does not exist, or is not theirs to see (HTTP 404)."""


class Conflict(PdoError):
    """The request clashes with the current state: a duplicate id, an illegal transition (HTTP 409)."""


class Unauthenticated(PdoError):
    """No API key, or one pdo does not know (HTTP 401)."""


class Forbidden(PdoError):
    """The caller is known but their role may not do this (HTTP 403)."""


class Unavailable(PdoError):
    """A backing service (Kafka, the registry, the database) did not answer; retrying later may work (HTTP 503)."""


class TooManyRequests(PdoError):
    """The caller reached a cap (rate, open streams, grants); `retry_after_s` says when trying again helps,
    None when waiting alone will not (HTTP 429, with Retry-After when known)."""

    def __init__(self, message: str, hint: str = "", retry_after_s: int | None = None) -> None:
        super().__init__(message, hint)
        self.retry_after_s = retry_after_s
