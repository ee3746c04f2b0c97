"""What fuzzing the API against its own schema found (tests/integration/test_openapi_fuzz.py):
bounds on query parameters that were neither enforced nor documented, and error answers
the schema did not describe."""

import pytest

from tests.billing_support import customer
from tests.integration.test_managed import Harness, cp

__all__ = ["cp"]


@pytest.mark.parametrize(
    ("path", "param"),
    [
        ("/v1/nodes?limit=0", "limit"),
        ("/v1/nodes?limit=-1155", "limit"),
        ("/v1/nodes?limit=501", "limit"),
        ("/v1/commands?limit=-1423463", "limit"),
        ("/v1/admin/billing/treasury-report?window_days=0", "window_days"),
    ],
)
async def test_out_of_range_query_parameters_are_400_problems(
    cp: Harness, path: str, param: str
) -> None:
    # limit=0 and negative limits reached SQL (LIMIT -n, or page[-1] of an empty page): 500s.
    response = await cp.client.get(path, headers=cp.as_admin())
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["error"]["code"] == "invalid_request"
    assert param in response.json()["error"]["detail"]


async def test_a_customer_usage_window_is_bounded(cp: Harness) -> None:
    _, secret = await customer(cp.plane, 1000)
    for query in ("window_days=0", "window_days=367", "limit=0"):
        response = await cp.client.get(
            f"/v1/billing/usage?{query}", headers={"Authorization": f"Bearer {secret}"}
        )
        assert response.status_code == 400, (query, response.text)


async def test_the_schema_documents_every_error_answer_as_it_is_sent(cp: Harness) -> None:
    schema = (await cp.client.get("/schema/openapi.json")).json()
    limit = next(
        p for p in schema["paths"]["/v1/nodes"]["get"]["parameters"] if p["name"] == "limit"
    )
    assert (limit["schema"]["minimum"], limit["schema"]["maximum"]) == (1, 500)
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            for status, answer in operation["responses"].items():
                if not status.startswith(("4", "5")) or path == "/ready":
                    continue
                where = f"{method.upper()} {path} {status}"
                openai = path in ("/v1/chat/completions", "/v1/models")
                expected = "application/json" if openai else "application/problem+json"
                assert list(answer["content"]) == [expected], where
    ready = schema["paths"]["/ready"]["get"]["responses"]
    assert "503" in ready  # not ready is an answer, with the same body
    chat = schema["paths"]["/v1/chat/completions"]["post"]
    assert set(chat["responses"]["200"]["content"]) == {"application/json", "text/event-stream"}
    assert chat["requestBody"]["required"] is True


async def test_bad_utf8_inside_a_json_string_is_a_400_not_a_500(cp: Harness) -> None:
    # msgspec raises UnicodeDecodeError, not a DecodeError, for it: Litestar answered 500.
    body = b'{"node_id": "\xff", "public_key": "x"}'
    response = await cp.client.post(
        "/v1/enrollment/challenges", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "invalid_request"
    _, secret = await customer(cp.plane, 1000)
    gateway = await cp.client.post(
        "/v1/chat/completions",
        content=b'{"model": "\xe2", "messages": []}',
        headers={"Authorization": f"Bearer {secret}", "content-type": "application/json"},
    )
    assert gateway.status_code == 400, gateway.text
    assert gateway.json()["error"]["type"] == "invalid_request_error"


async def test_a_unicode_digit_timestamp_is_refused_not_a_crash(cp: Harness) -> None:
    # "²".isdigit() is True and int("²") raises: the signed-request parser crashed.
    node = cp.node("node-a")
    assert (await node.enroll()).status_code == 201
    headers = {**node.headers(node.report(1)), "x-b3iq-timestamp": "\u00b2"}
    response = await cp.client.post(
        "/v1/nodes/node-a/heartbeats",
        content=node.report(1),
        headers={k: v.encode("latin-1") for k, v in headers.items()},
    )
    assert response.status_code == 401, response.text
    assert response.json()["error"]["code"] == "invalid_signature"
