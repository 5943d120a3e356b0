"""Errors of the API in one shape: RFC 9457 problem details (`application/problem+json`).

Handlers raise `ApiProblem` (or one of its makers below); the API's middleware
(web/api/routes.py) turns it, and any HTTP error aiohttp raises, into a problem body.
"""

from __future__ import annotations

from aiohttp import web

from web.api.models import Problem

PROBLEM_TYPE = "application/problem+json"
# `type` URIs (RFC 9457 §3.2): a URN per kind of problem, each explained in docs/api.md
# ("Errors"); a URN because the hub has no public documentation host to point at.
TYPE_BASE = "urn:illhub:problem:"

TITLES: dict[int, tuple[str, str]] = {
    400: ("bad-parameter", "Bad parameter"),
    401: ("unauthorized", "Token missing, unknown, revoked or expired"),
    403: ("forbidden", "Token lacks the scope"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    409: ("conflict", "Not possible in the current state"),
    415: ("unsupported-media-type", "Send application/json"),
    422: ("unprocessable", "Refused"),
    500: ("internal-error", "Internal error"),
}


class ApiProblem(Exception):
    """An answer other than 2xx, with what to tell the client."""

    def __init__(self, status: int, detail: str, *, parameter: str | None = None,
                 headers: dict[str, str] | None = None, code: str | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.parameter = parameter
        self.headers = headers or {}
        self.code = code


def bad_parameter(name: str, detail: str) -> ApiProblem:
    return ApiProblem(400, f"parameter {name!r}: {detail}", parameter=name)


def not_found(detail: str) -> ApiProblem:
    return ApiProblem(404, detail)


def problem_body(status: int, detail: str, parameter: str | None = None,
                 code: str | None = None) -> Problem:
    slug, title = TITLES.get(status, ("http-" + str(status), f"HTTP {status}"))
    return Problem(type=TYPE_BASE + slug, title=title, status=status, detail=detail,
                   parameter=parameter, code=code)


def problem_response(status: int, detail: str, *, parameter: str | None = None,
                     headers: dict[str, str] | None = None, code: str | None = None
                     ) -> web.Response:
    body = problem_body(status, detail, parameter, code)
    return web.Response(status=status, headers=headers,
                        text=body.model_dump_json(exclude_none=True),
                        content_type=PROBLEM_TYPE, charset="utf-8")
