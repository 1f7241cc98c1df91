"""The one error a request can end with: an HTTP status, a short kind for metrics, and a message for people."""

from __future__ import annotations

from typing import Any


class ServeError(Exception):
    """A request the server refuses; the message says what was wrong (and never names a path of the machine)."""

    def __init__(self, status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.kind, self.message, self.headers = status, kind, message, headers or {}

    def body(self) -> dict[str, Any]:
        """The JSON body of the error response."""
        return error_body(self.status, self.kind, self.message)


def error_body(status: int, kind: str, message: str) -> dict[str, Any]:
    """{"error": {"status", "kind", "message"}}: the shape of every error the server answers."""
    return {"error": {"status": status, "kind": kind, "message": message}}
