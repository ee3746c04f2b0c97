"""OpenAI's error shape with B3IQ's block, and the HTTP status → OpenAI type mapping (pure).

PRODUCT.md §7: ``{"error": {"message", "type", "param", "code", "b3iq": {"status",
"title", "detail", "code"}}}``; the node's API and the hosted gateway both answer so.
"""

from typing import Any

import msgspec

OPENAI_TYPES = {400: "invalid_request_error", 413: "invalid_request_error"}
OPENAI_TYPES |= {415: "invalid_request_error", 422: "invalid_request_error"}
OPENAI_TYPES |= {401: "authentication_error", 403: "authentication_error"}
OPENAI_TYPES |= {402: "insufficient_quota", 404: "not_found_error", 409: "conflict_error"}
OPENAI_TYPES |= {429: "rate_limit_error"}


def openai_type(status: int) -> str:
    return OPENAI_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")


def openai_error(  # noqa: PLR0917
    status: int, code: str, title: str, detail: str, param: str | None = None, family: str = ""
) -> dict[str, Any]:
    """``family``: the stable B3IQ code a specific ``code`` belongs to (default: itself)."""
    return {
        "error": {
            "message": detail,
            "type": openai_type(status),
            "param": param,
            "code": code,
            "b3iq": {"status": status, "title": title, "detail": detail, "code": family or code},
        }
    }


class B3iqErrorBlock(msgspec.Struct, frozen=True):
    status: int
    title: str
    detail: str
    code: str


class OpenAIError(msgspec.Struct, frozen=True):
    message: str
    type: str
    param: str | None
    code: str
    b3iq: B3iqErrorBlock


class OpenAIErrorBody(msgspec.Struct, frozen=True):
    """What ``openai_error`` builds, as a type: the OpenAPI schemas name it."""

    error: OpenAIError
