"""How refusal bodies the real broker never sends are read: FastAPI's own ``{"detail": …}`` and non-JSON pages.

The broker renders every refusal as ``{"error", "message"}`` (tested against it in test_commands.py); these
shapes come from something in front of it, or from a handler that slipped, and need no server to check.
"""

from __future__ import annotations

import httpx

from cli.api import _error_body


def test_fastapi_validation_details_become_one_sentence() -> None:
    response = httpx.Response(422, json={"detail": [{"loc": ["body", "comment"], "msg": "field required"},
                                                    {"loc": ["query", "limit"], "msg": "too big"}]})
    message = "the broker refused the input: comment: field required; query.limit: too big"
    assert _error_body(response) == (None, message)


def test_a_plain_detail_string_is_the_message() -> None:
    assert _error_body(httpx.Response(404, json={"detail": "Not Found"})) == (None, "Not Found")


def test_bodies_without_a_message_give_none() -> None:
    assert _error_body(httpx.Response(502, text="Bad Gateway")) == (None, None)
    assert _error_body(httpx.Response(500, json=["not", "an", "object"])) == (None, None)
    assert _error_body(httpx.Response(403, json={"error": "forbidden", "message": ""})) == (None, None)
