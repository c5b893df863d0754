"""Errors pdo shows to people: each says what went wrong and what to do about it."""


class PdoError(Exception):
    """A failure the user can act on; the CLI prints it without a traceback and exits non-zero."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}\n  hint: {self.hint}" if self.hint else self.message
