"""The local API through the official `openai` client, as any user would call it."""

import time

import httpx
import openai
import pytest

from node.keys import KeyStore
from tests.e2e.node.conftest import NO_END, Node

HELLO = [{"role": "user", "content": "hello"}]


@pytest.fixture
def client(node: Node) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{node.url}/v1", api_key=node.key, max_retries=0)


def client_with(node: Node, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{node.url}/v1", api_key=key, max_retries=0)


def test_health_needs_no_key(node: Node) -> None:
    body = httpx.get(f"{node.url}/health").json()
    assert body["status"] == "ok"
    assert body["readiness"] == ["local-ready"]


def test_models_lists_the_tiny_model(client: openai.OpenAI) -> None:
    assert "tiny" in [m.id for m in client.models.list()]


def test_non_streaming_completion(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="tiny", messages=HELLO, max_tokens=16, logit_bias=NO_END
    )
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage is not None
    assert reply.usage.completion_tokens == 16
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + 16
    assert isinstance(reply.choices[0].message.content, str)
    extra = reply.model_extra or {}
    assert extra["b3iq"]["runtime_kind"] == "llama_cpp"
    assert len(extra["b3iq"]["receipt_hash"]) == 64


def test_streaming_sends_usage_when_asked(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="tiny",
        messages=HELLO,
        max_tokens=24,
        logit_bias=NO_END,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    first = chunks[0].choices[0].delta
    assert first.role == "assistant" and first.content  # the role rides on the first text
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finish = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finish == ["length"]
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 24
    assert text


def test_stream_and_plain_call_agree_for_a_seed(client: openai.OpenAI) -> None:
    args = {"model": "tiny", "messages": HELLO, "max_tokens": 20, "seed": 7, "logit_bias": NO_END}
    plain = client.chat.completions.create(**args)  # type: ignore[call-overload]
    again = client.chat.completions.create(**args)  # type: ignore[call-overload]
    streamed = "".join(
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(**args, stream=True)  # type: ignore[call-overload]
        if c.choices
    )
    assert plain.choices[0].message.content == again.choices[0].message.content == streamed


def test_greedy_decoding_and_stop_sequence(client: openai.OpenAI) -> None:
    full = client.chat.completions.create(
        model="tiny", messages=HELLO, max_tokens=30, temperature=0, logit_bias=NO_END
    )
    text = full.choices[0].message.content or ""
    stop = text[5:7]
    assert stop
    cut = client.chat.completions.create(
        model="tiny", messages=HELLO, max_tokens=30, temperature=0, logit_bias=NO_END, stop=[stop]
    )
    assert cut.choices[0].finish_reason == "stop"
    assert cut.choices[0].message.content == text[: text.find(stop)]


def test_content_parts_are_accepted(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": [{"type": "text", "text": "hello"}]}],
        max_tokens=4,
    )
    assert reply.choices[0].message.role == "assistant"


def test_missing_invalid_revoked_and_expired_keys_are_401(node: Node) -> None:
    store = KeyStore(node.services.db)
    revoked, revoked_secret = store.create("revoked")
    store.revoke(revoked.public_id)
    _, expired_secret = store.create("expired", expires_at=time.time() - 1)
    cases = {
        "": "missing_api_key",
        "b3iq_local_nonsense": "invalid_api_key",
        node.key[:-2] + "xx": "invalid_api_key",
        revoked_secret: "api_key_revoked",
        expired_secret: "api_key_expired",
    }
    for secret, code in cases.items():
        headers = {"Authorization": f"Bearer {secret}"} if secret else {}
        response = httpx.post(f"{node.url}/v1/chat/completions", headers=headers, json={})
        assert response.status_code == 401
        error = response.json()["error"]
        assert error["type"] == "authentication_error"
        assert error["code"] == code
        assert error["b3iq"] == {
            "status": 401,
            "title": "Unauthorized",
            "detail": error["message"],
            "code": "unauthorized",
        }
    with pytest.raises(openai.AuthenticationError):
        client_with(node, revoked_secret).models.list()


def test_key_out_of_scope_is_403(node: Node) -> None:
    store = KeyStore(node.services.db)
    _, other_model = store.create("other", models=("other",))
    _, no_chat = store.create("profiles-only", endpoints=("profiles",))
    with pytest.raises(openai.PermissionDeniedError) as denied:
        client_with(node, other_model).chat.completions.create(model="tiny", messages=HELLO)
    assert denied.value.body["code"] == "local_api_key_scope_denied"  # type: ignore[index]
    assert denied.value.body["param"] == "model"  # type: ignore[index]
    assert [m.id for m in client_with(node, other_model).models.list()] == []
    with pytest.raises(openai.PermissionDeniedError):
        client_with(node, no_chat).chat.completions.create(model="tiny", messages=HELLO)


def test_unknown_model_is_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="no-such-model", messages=HELLO)
    assert missing.value.body["code"] == "model_not_found"  # type: ignore[index]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "tiny", "messages": HELLO, "max_tokens": "many"}, "max_tokens"),
        ({"model": "tiny", "messages": HELLO, "temperature": 9}, "temperature"),
        ({"model": "tiny", "messages": HELLO, "n": 2}, "n"),
        ({"model": "tiny", "messages": []}, "messages"),
        ({"model": "tiny", "messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
        ({"messages": HELLO}, None),
    ],
)
def test_malformed_body_is_400_naming_the_field(
    node: Node, body: dict[str, object], param: str | None
) -> None:
    response = httpx.post(
        f"{node.url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {node.key}"},
        json=body,
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    if param is not None:
        assert error["param"] == param
    else:
        assert "model" in error["message"]


def test_broken_json_is_400(node: Node) -> None:
    response = httpx.post(
        f"{node.url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {node.key}", "Content-Type": "application/json"},
        content=b"{not json",
    )
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_body_over_the_limit_is_413(node: Node) -> None:
    big = [{"role": "user", "content": "x" * 300_000}]
    response = httpx.post(
        f"{node.url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {node.key}"},
        json={"model": "tiny", "messages": big},
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"


def test_prompt_over_the_context_is_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "hello " * 600}]
        )
    assert error.value.body["code"] == "context_length_exceeded"  # type: ignore[index]


def test_model_that_failed_to_load_is_503_and_daemon_stays_up(
    node: Node, client: openai.OpenAI
) -> None:
    for model in ("broken", "nowhere"):
        with pytest.raises(openai.InternalServerError) as error:
            client.chat.completions.create(model=model, messages=HELLO)
        assert error.value.status_code == 503
        assert error.value.body["code"] == "runtime_unavailable"  # type: ignore[index]
        assert error.value.body["type"] == "api_error"  # type: ignore[index]
    assert client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=2).choices


def test_model_profiles(node: Node) -> None:
    response = httpx.get(
        f"{node.url}/v1/model-profiles", headers={"Authorization": f"Bearer {node.key}"}
    )
    profiles = {p["model"]: p for p in response.json()["data"]}
    tiny = profiles["tiny"]
    assert tiny["status"] == "installed"
    assert tiny["runtime_kind"] == "llama_cpp"
    assert tiny["route_tier"] == "local_convenience"
    assert tiny["queue_health"] in ("healthy", "busy")
    assert not tiny["paid_route_eligible"]
    assert not tiny["network_eligible"]
    assert profiles["broken"]["queue_health"] == "unhealthy"
    assert profiles["nowhere"]["status"] == "runtime_missing"


def test_receipts_submit_says_not_enrolled(node: Node) -> None:
    response = httpx.post(
        f"{node.url}/v1/receipts/submit", headers={"Authorization": f"Bearer {node.key}"}
    )
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "not_enrolled"
    assert response.json()["error"]["type"] == "conflict_error"


def test_metrics_and_openapi(node: Node, client: openai.OpenAI) -> None:
    client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=2)
    text = httpx.get(f"{node.url}/metrics").text
    assert 'b3iq_node_tokens_total{kind="completion",model="tiny"}' in text
    assert 'b3iq_node_queue_depth{model="tiny"}' in text
    schema = httpx.get(f"{node.url}/schema/openapi.json").json()
    assert "/v1/chat/completions" in schema["paths"]


@pytest.mark.parametrize("token", ["\u00b2", "--1", "1e3"])
def test_a_logit_bias_key_that_is_not_an_integer_is_400(node: Node, token: str) -> None:
    # "²".isdigit() and "--1".lstrip("-").isdigit() are True, and int() raised: a 500.
    response = httpx.post(
        f"{node.url}/v1/chat/completions",
        json={
            "model": "tiny",
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 1,
            "logit_bias": {token: 1},
        },
        headers={"Authorization": f"Bearer {node.key}"},
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "logit_bias"


def test_bad_utf8_inside_a_json_string_is_400(node: Node) -> None:
    response = httpx.post(
        f"{node.url}/v1/chat/completions",
        content=b'{"model": "\xff", "messages": [{"role": "user", "content": "hi"}]}',
        headers={"Authorization": f"Bearer {node.key}", "Content-Type": "application/json"},
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "invalid_request"
