"""OpenAI-style errors: every refused request is a 4xx (or 503 when the queue is full) with the body
``{"error": {"message", "type", "param", "code"}}`` the ``openai`` client reads."""

from __future__ import annotations

from typing import Any

# HTTP status -> the OpenAI error type clients see
_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
          405: "invalid_request_error", 413: "invalid_request_error", 415: "invalid_request_error",
          422: "invalid_request_error", 503: "server_overloaded", 500: "server_error"}


class ApiError(Exception):
    """A request the server answers with an error status; ``headers`` (e.g. Retry-After) go with it."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.status, self.message, param=self.param, code=self.code)


def error_body(status: int, message: str, *, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": _TYPES.get(status, "invalid_request_error" if status < 500
                                                                else "server_error"),
                      "param": param, "code": code}}


def bad_request(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, param=param, code=code)
