"""OpenAI-shaped errors: `{"error": {"message", "type", "param", "code"}}` with the right HTTP status.

Contract: raise `APIError` anywhere in a request handler; `install_error_handlers(app)` turns it, request
validation failures (bad JSON, wrong types, out-of-range values, unknown fields) and unexpected exceptions
into OpenAI-shaped JSON responses. Validation failures name the offending parameter.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)


class APIError(Exception):
    def __init__(
        self,
        message: str,
        *,
        status: int = 400,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        message, param = _text(message), _text(param)  # echoed user input may hold lone surrogates
        super().__init__(message)
        self.message = message
        self.status = status
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def generation_failed(message: str, limit: bool) -> APIError:
    """The error of a request that failed while generating (`RequestFailed`): a 400 when its constraint ran
    past an automaton budget (the request asked for too much), else a 500."""
    if limit:
        return APIError(message, status=400, type="invalid_request_error", code="constraint_too_large")
    return APIError(message, status=500, type="server_error")


def _text(value: str | None) -> str | None:
    """`value` as UTF-8-encodable text: a lone surrogate (from a "\\ud800" escape) becomes `\\ud800`."""
    return value if value is None else value.encode("utf-8", "backslashreplace").decode("utf-8")


def _param_path(loc: tuple) -> str | None:
    parts = [p for p in loc if p != "body"]
    path = ""
    for part in parts:
        if isinstance(part, int):
            path += f"[{part}]"
        elif not str(part).startswith(("function-after", "function-before")) and "[" not in str(part):
            path += ("." if path else "") + str(part)
    return path or None


def validation_error(exc: RequestValidationError) -> APIError:
    first = exc.errors()[0]
    kind = first.get("type", "")
    if kind == "json_invalid":
        return APIError(f"invalid JSON body: {first.get('msg')}", code="invalid_json")
    param = _param_path(tuple(first.get("loc", ())))
    if kind == "extra_forbidden":
        return APIError(
            f"unrecognized request argument supplied: {param}", param=param, code="unknown_parameter"
        )
    if kind == "missing":
        return APIError(
            f"missing required parameter: '{param}'", param=param, code="missing_required_parameter"
        )
    message = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    return APIError(f"invalid value for '{param}': {message}", param=param, code="invalid_value")


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return validation_error(exc).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return APIError(str(exc.detail), status=exc.status_code, type=kind).response()

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return APIError(f"internal error: {exc}", status=500, type="server_error").response()
