"""Failures become HTTP answers here, in one place: ``answer_for`` maps a domain error, or a database refusal
that got past the checks, to a status, a code and a message; the API renders it as ``{"error": code,
"message": why}`` and the web pages (approvals.web) as an error page."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, IntegrityError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from broker.audit.refusals import Refusal, unrecorded_refusal
from broker.audit.trail import Action
from broker.errors import BrokerError
from broker.sources import client_address

log = logging.getLogger("gatepass.broker")

_HTTP_CODES = {401: "not_authenticated", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
               409: "conflict", 413: "too_large", 415: "unsupported_media_type"}


@dataclass(frozen=True)
class Answer:
    status: int
    code: str
    message: str


def answer_for(error: BrokerError | IntegrityError | DataError) -> Answer:
    """The one mapping of a failure to an HTTP answer, for the API and the pages alike."""
    if isinstance(error, BrokerError):
        return Answer(error.status_code, error.code, error.message)
    if isinstance(error, IntegrityError):
        # Two requests raced for the same unique thing (e.g. the same approver twice); nothing was changed.
        log.info("integrity error turned into 409: %s", error.orig.__class__.__name__)
        return Answer(409, "conflict", "this change conflicts with another one made at the same time; nothing was "
                      "changed: look again and retry")
    # A backstop: a value the database itself cannot hold (bounds are meant to catch these first).
    log.info("data error turned into 400: %s", error.orig.__class__.__name__)
    return Answer(400, "invalid_input", "the request holds a value that cannot be stored; nothing was changed")


def error_response(status: int, code: str, message: str) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"error": code, "message": message}, status_code=status, headers=headers)


def _describe_validation(error: RequestValidationError) -> str:
    parts = []
    for item in error.errors()[:5]:
        where = ".".join(str(p) for p in item.get("loc", ()) if p not in ("body", "query", "path"))
        message = str(item.get("msg", "is not valid"))
        parts.append(f"{where}: {message}" if where else message)
    return "the request is not valid: " + "; ".join(parts)


def _worth_recording(request: Request, error: BrokerError) -> bool:
    if error.status_code == 401:
        # A credential presented that is not (or no longer) valid; no credential at all is a client that is not
        # signed in, not an attempt to use one.
        return not error.audited and bool(request.headers.get("authorization"))
    # A gateway's own protocol answers (an unknown or ended session in a race) are not refusals of access.
    return unrecorded_refusal(error) and not from_gateway(request)


def from_gateway(request: Request) -> bool:
    """A call of the gateway API: the gateway speaks for many vendors from one address."""
    return request.url.path.startswith("/api/v1/gateway/")


def _audit_refusal(request: Request, error: BrokerError) -> None:
    state = getattr(request.app.state, "broker", None)
    if state is None:
        return
    state.refusals.record(Refusal(
        action=Action.API_REFUSED, reason=error.message, actor=getattr(request.state, "actor", None),
        source=client_address(request, state.settings), subject=request.url.path[:128],
        details={"method": request.method, "status": error.status_code, "error": error.code}))


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(BrokerError)
    async def _broker_error(request: Request, error: BrokerError) -> JSONResponse:
        if _worth_recording(request, error):
            await run_in_threadpool(_audit_refusal, request, error)
        return _render(answer_for(error))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, error: RequestValidationError) -> JSONResponse:
        return error_response(400, "invalid_input", _describe_validation(error))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, error: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(error.status_code, "error")
        message = str(error.detail) if error.detail else code.replace("_", " ")
        if error.status_code == 404 and message == "Not Found":
            message = "there is no such page or API endpoint"
        return error_response(error.status_code, code, message)

    @app.exception_handler(DataError)
    @app.exception_handler(IntegrityError)
    async def _database_refusal(_request: Request, error: DataError | IntegrityError) -> JSONResponse:
        return _render(answer_for(error))


def _render(answer: Answer) -> JSONResponse:
    return error_response(answer.status, answer.code, answer.message)
