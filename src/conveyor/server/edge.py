"""The API's edge: one error shape declared on every route, bodies that are valid Unicode,
and an answer (never a bare 500 page) for whatever a request sends.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("conveyor.server")


class Issue(BaseModel):
    """One thing wrong with a request: where (`loc`), what (`msg`) and its kind (`type`)."""

    loc: list[str | int]
    msg: str
    type: str


class ErrorOut(BaseModel):
    """Every error the API answers: a sentence, or the list of what was invalid (422)."""

    detail: str | list[Issue] = Field(description="what was wrong, and what to do")


WHY = {
    400: "the request is malformed",
    401: "no token, or an unknown or revoked one",
    403: "the token's role is not enough for this route",
    404: "a record named in the request does not exist",
    409: "the request conflicts with the current state (the message says why)",
    413: "the request body is over the limit",
    422: "invalid input: each issue names where it is",
    426: "an agent whose version this server does not accept (the message names both)",
    500: "an unexpected error, logged on the server",
    503: "the server is busy: retry after the Retry-After header's seconds",
}


def responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` declaring these error status codes with the error shape."""
    return {code: {"model": ErrorOut, "description": WHY[code]} for code in codes}


_WRITES = {"POST", "PUT", "PATCH"}


def document(router: APIRouter) -> None:
    """Declare on each route the errors any route of its kind may answer.

    A route with a role (a `require_*` dependency) may answer 401 and 403; one with a
    body 413; one with parameters or a body 422 (and every route 503 when the database is
    busy). What only some routes answer (404, 409) is declared where they are defined.
    """
    for route in router.routes:
        if not isinstance(route, APIRoute):
            continue
        codes = [503]
        calls = [getattr(dep.call, "__name__", "") for dep in route.dependant.dependencies]
        if any(name.startswith("require_") for name in calls):
            codes += [401, 403]
        if route.body_field is not None:
            codes.append(413)
        has_params = route.dependant.path_params or route.dependant.query_params
        if route.body_field is not None or has_params or (route.methods or set()) & _WRITES:
            codes.append(422)
        for code, declared in responses(*codes).items():
            route.responses.setdefault(code, declared)


def install(api: FastAPI) -> None:
    """The exception handlers and middleware of the edge (add before the body limit)."""
    api.add_exception_handler(RequestValidationError, _invalid_request)  # type: ignore[arg-type]
    api.add_middleware(UnicodeBody)
    api.add_middleware(AnswerAlways)


def _text(value: object) -> str:
    """A string that can be encoded as UTF-8 whatever it was made from."""
    return str(value).encode("utf-8", "replace").decode("utf-8")


async def _invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
    # not FastAPI's default: it echoes each invalid input back (a 24 MB string, 24 MB
    # again) and may hold text that cannot be encoded
    issues = [
        {
            "loc": [part if isinstance(part, int) else _text(part) for part in err.get("loc", ())],
            "msg": _text(err.get("msg", "")),
            "type": _text(err.get("type", "")),
        }
        for err in exc.errors()
    ]
    return JSONResponse({"detail": issues}, status_code=422)


def _reply(status: int, detail: object) -> tuple[Message, Message]:
    body = json.dumps({"detail": detail}).encode()
    start: Message = {
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
    }
    return start, {"type": "http.response.body", "body": body}


class AnswerAlways:
    """ASGI middleware: an exception no handler took becomes a logged 500 with a JSON body."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watched)
        except Exception:
            log.exception(
                "unexpected error answering a request",
                extra={"method": scope.get("method"), "path": scope.get("path")},
            )
            if started:
                raise
            for message in _reply(500, "internal error, logged on the server: please report it"):
                await send(message)


# a JSON escape of a UTF-16 surrogate (\ud800-\udfff); pairs of them are fine, lone ones not
_SURROGATE = re.compile(rb"\\u[dD][89abcdefABCDEF]")


def unicode_problem(body: bytes) -> str | None:
    """Why a JSON request body is not valid Unicode text, or None when it is."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"the request body is not valid UTF-8 (byte {exc.start})"
    if not _SURROGATE.search(body):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None  # not JSON: the route says so
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return "the request body holds a lone UTF-16 surrogate escape (\\ud800-\\udfff)"
    return None


def _is_json(scope: Scope) -> bool:
    for key, value in scope.get("headers") or ():
        if key == b"content-type":
            kind = bytes(value).split(b";")[0].strip().lower()
            return kind == b"application/json" or kind.endswith(b"+json")
    return True  # no content type: FastAPI reads the body as JSON


class UnicodeBody:
    """ASGI middleware: a JSON body that is not valid UTF-8, or holds a lone surrogate,
    gets 422 before any route reads it (such text cannot be stored nor sent back)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") not in _WRITES or not _is_json(scope):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away: nobody to answer
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        problem = unicode_problem(body)
        if problem is not None:
            issue = {"loc": ["body"], "msg": problem, "type": "unicode_invalid"}
            for reply in _reply(422, [issue]):
                await send(reply)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
