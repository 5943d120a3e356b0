"""The API's OpenAPI 3.1 document, served at `/api/v1/openapi.json`.

Paths are written here as data; every response body's schema comes from the pydantic
models the handlers answer with (web/api/models.py), through pydantic's JSON Schema
(2020-12, the dialect OpenAPI 3.1 uses), so the document describes what the code sends.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from pydantic.json_schema import models_json_schema

from accounts.tokens import Scope
from settlement.calendar import MONTH_PATTERN, PERIOD_PATTERN
from web.api.models import MODELS, REQUESTS
from web.api.problems import PROBLEM_TYPE

BASE = "/api/v1"
REF = "#/components/schemas/{model}"


def _ref(model: str) -> dict[str, str]:
    return {"$ref": REF.format(model=model)}


def _json(model: str, description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": _ref(model)}}}


def _problem(description: str) -> dict[str, Any]:
    return {"description": description, "content": {PROBLEM_TYPE: {"schema": _ref("Problem")}}}


def _errors(*statuses: int) -> dict[str, Any]:
    said = {400: "a query parameter is wrong (named in `parameter`)",
            401: "no token, or an unknown, revoked or expired one",
            403: "the token lacks the scope, or its person the permission",
            404: "no such thing within the token's reach",
            409: "not possible in the statement's or the dispute's state now (`code` "
                 "says why: window_closed, already_disputed, already_resolved, ...)",
            415: "the body is not application/json",
            422: "the body is wrong, or settlement refused it (`code` says why)"}
    return {str(s): _problem(said[s]) for s in statuses}


def _query(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": schema}


def _path(name: str, description: str, schema: dict[str, Any] | None = None
          ) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": description,
            "schema": schema or {"type": "string"}}


_PERIOD = {"type": "string", "pattern": PERIOD_PATTERN}
_MONTH = {"type": "string", "pattern": MONTH_PATTERN}
_LIMIT = _query("limit", "page size, 1 to 500 (default 100)",
                {"type": "integer", "minimum": 1, "maximum": 500, "default": 100})
_CURSOR = _query("cursor", "`next_cursor` of the previous page", {"type": "string"})


def _get(summary: str, scope: Scope | None, parameters: list[dict[str, Any]],
         responses: dict[str, Any]) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "parameters": parameters,
                          "responses": responses}
    if scope is None:
        op["security"] = []
    else:
        op["security"] = [{"bearer": [scope.value]}]
        op["x-scope"] = scope.value
    return {"get": op}


def _post(summary: str, scope: Scope, parameters: list[dict[str, Any]], body: str,
          responses: dict[str, Any]) -> dict[str, Any]:
    return {"post": {"summary": summary, "parameters": parameters,
                     "requestBody": {"required": True, "content": {
                         "application/json": {"schema": _ref(body)}}},
                     "responses": responses, "security": [{"bearer": [scope.value]}],
                     "x-scope": scope.value}}


_OPEN = _query("open", "true: only what is not paid in full (statements) or not resolved "
               "(disputes)", {"type": "boolean", "default": False})
_REFERENCE = _path("reference", "the statement's reference, e.g. ILL-2026-10-R12-A3F9C1-CNY",
                   {"type": "string", "pattern": "^[A-Za-z0-9-]{1,35}$"})


def _paths() -> dict[str, Any]:
    return {
        f"{BASE}/transactions": _get(
            "Transactions of the agencies in reach (as requester or supplier), oldest "
            "change first", Scope.TRANSACTIONS_READ,
            [_query("state", "only transactions in this state", {"type": "string"}),
             _query("updated_since", "only those changed at or after this instant "
                    "(ISO 8601 with a time zone)", {"type": "string", "format": "date-time"}),
             _LIMIT, _CURSOR],
            {"200": _json("TransactionPage", "a page of transactions"),
             **_errors(400, 401, 403)}),
        f"{BASE}/transactions/{{id}}": _get(
            "One transaction: its facts and audit trail", Scope.TRANSACTIONS_READ,
            [_path("id", "the hub's transaction id")],
            {"200": _json("TransactionDetail", "the transaction"),
             **_errors(401, 403, 404)}),
        f"{BASE}/statements": _get(
            "Settlement statements of the agencies in reach, newest period first",
            Scope.STATEMENTS_READ,
            [_query("period", "only this period (YYYY-MM, YYYY-Bn, YYYY-Qn or YYYY)",
                    _PERIOD), _OPEN, _LIMIT, _CURSOR],
            {"200": _json("StatementPage", "a page of statements"),
             **_errors(400, 401, 403)}),
        f"{BASE}/statements/{{period}}/{{file}}": _get(
            "A statement's file: `<symbol>.csv` (UTF-8 with BOM) or `<symbol>.pdf`",
            Scope.STATEMENTS_READ,
            [_path("period", "the settlement period, YYYY-MM, YYYY-Bn, YYYY-Qn or YYYY",
                   _PERIOD),
             _path("file", "the agency's symbol and .csv or .pdf",
                   {"type": "string", "pattern": r"^.+\.(csv|pdf)$"})],
            {"200": {"description": "the file",
                     "content": {"text/csv": {"schema": {"type": "string"}},
                                 "application/pdf": {"schema": {"type": "string",
                                                                "format": "binary"}}}},
             **_errors(400, 401, 403, 404)}),
        f"{BASE}/statements/{{reference}}": _get(
            "What a statement asks to be paid, its history, its lines and their disputes",
            Scope.STATEMENTS_READ, [_REFERENCE],
            {"200": _json("DueDetail", "the statement's due"), **_errors(401, 403, 404)}),
        f"{BASE}/statements/{{reference}}/payments": _post(
            "Record a payment against a statement (the centre only: a person reaching the "
            "whole consortium)", Scope.STATEMENTS_SETTLE, [_REFERENCE], "NewPayment",
            {"201": _json("PaymentRecorded", "recorded; the statement as it is now"),
             **_errors(401, 403, 404, 415, 422)}),
        f"{BASE}/aging": _get(
            "What the agencies in reach owe the centre, or are owed, by days since issue",
            Scope.STATEMENTS_READ, [],
            {"200": _json("Aging", "the aging table"), **_errors(401, 403)}),
        f"{BASE}/disputes": {
            **_get("Disputes of statement lines where an agency in reach is the requester "
                   "or the supplier", Scope.STATEMENTS_READ, [_OPEN],
                   {"200": _json("DisputeList", "the disputes"), **_errors(400, 401, 403)}),
            **_post("Dispute one line of a statement of an agency in reach, within its "
                    "window", Scope.STATEMENTS_DISPUTE, [], "NewDispute",
                    {"201": _json("Dispute", "the dispute, opened"),
                     **_errors(401, 403, 404, 409, 415, 422)})},
        f"{BASE}/disputes/{{id}}/resolution": _post(
            "Accept (optionally at a corrected fee) or reject a dispute (the centre only)",
            Scope.STATEMENTS_SETTLE, [_path("id", "the dispute's number",
                                            {"type": "string", "pattern": "^[0-9]+$"})],
            "Resolution",
            {"200": _json("Dispute", "the dispute, resolved"),
             **_errors(401, 403, 404, 409, 415, 422)}),
        f"{BASE}/budgets": _get(
            "Subsidy budgets of the agencies in reach in a period", Scope.BUDGETS_READ,
            [_query("period", "YYYY-MM (default: the current month; budgets renew monthly)",
                    _MONTH)],
            {"200": _json("BudgetList", "the budgets"), **_errors(400, 401, 403)}),
        f"{BASE}/openapi.json": _get(
            "This document", None, [],
            {"200": {"description": "the OpenAPI 3.1 document",
                     "content": {"application/json": {"schema": {"type": "object"}}}}}),
    }


@cache
def document() -> dict[str, Any]:
    """The whole document (built once: it is the same for every request)."""
    _, schemas = models_json_schema([(m, "serialization") for m in MODELS]
                                    + [(m, "validation") for m in REQUESTS],
                                    ref_template=REF)
    return {
        "openapi": "3.1.0",
        "info": {"title": "ILL Hub API", "version": "1.0.0",
                 "description": "Access for library systems and finance tools to the "
                                "transactions, statements, payments, disputes and budgets "
                                "of the agencies a token's person may see; disputes and "
                                "payments are the only writes. Errors are RFC 9457 problem "
                                "details. See docs/api.md."},
        "paths": _paths(),
        "components": {
            "schemas": schemas.get("$defs", {}),
            "securitySchemes": {"bearer": {
                "type": "http", "scheme": "bearer",
                "description": "an API token from `run.py token create`; scopes: "
                               + ", ".join(s.value for s in Scope)}}},
        "security": [{"bearer": []}],
    }
