"""The one shape of a refusal: an HTTP status, a machine-readable code and a message.

REST answers it as `{"error": code, "message": message}` with `status` and `headers`
(server/app.py); a WebSocket sends it as an `error` frame `{code, message}`. Rules
(rooms.py), limits (limits.py) and routes (api.py, ws.py) all raise it, so both layers
render every refusal one way. Imports nothing of the server: anyone may raise it.
"""

from __future__ import annotations


class ApiError(Exception):
    """A request refused: `status` for REST, `code` and `message` for both transports."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})

    def body(self) -> dict[str, str]:
        """The REST body."""
        return {"error": self.code, "message": self.message}
