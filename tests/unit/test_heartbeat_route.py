"""The heartbeat route ahead of the framework: same answers, same problem JSON."""

from collections.abc import Mapping

import httpx
import pytest

from adapters.heartbeat_intake import HeartbeatAccepted, HeartbeatIntake
from adapters.http.heartbeat_route import MAX_BODY_BYTES, HeartbeatRoute
from adapters.http.problems import ApiError
from domain.ports import StoreUnavailable
from tests.support import framework


class FakeIntake:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, dict[str, str], bytes]] = []
        self.failure: Exception | None = None

    async def accept(
        self, node_id: str, path: str, headers: Mapping[str, str], body: bytes
    ) -> HeartbeatAccepted:
        self.calls.append((node_id, path, dict(headers), body))
        if self.failure is not None:
            raise self.failure
        return HeartbeatAccepted(heartbeat_seq=3, stream_seq=9, next_interval_s=30.0)


@pytest.fixture
def intake() -> FakeIntake:
    return FakeIntake()


@pytest.fixture
def client(intake: FakeIntake) -> httpx.AsyncClient:
    route = HeartbeatRoute(framework, intake, retry_after_s=7)  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=httpx.ASGITransport(route), base_url="http://cp")


async def test_a_heartbeat_reaches_the_intake_as_the_node_signed_it(
    client: httpx.AsyncClient, intake: FakeIntake
) -> None:
    response = await client.post(
        "/v1/nodes/n-1/heartbeats?x=1", content=b'{"a":1}', headers={"X-B3IQ-Nonce": "abc"}
    )
    assert response.status_code == 201
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"heartbeat_seq": 3, "stream_seq": 9, "next_interval_s": 30.0}
    [(node_id, path, headers, body)] = intake.calls
    assert (node_id, path, body) == ("n-1", "/v1/nodes/n-1/heartbeats?x=1", b'{"a":1}')
    assert headers["x-b3iq-nonce"] == "abc"


@pytest.mark.parametrize(
    ("failure", "status", "code"),
    [
        (ApiError(401, "invalid_signature", "Unauthorized", "bad_signature"), 401,
         "invalid_signature"),
        (StoreUnavailable("down"), 503, "service_unavailable"),
        (RuntimeError("bug"), 500, "internal_error"),
    ],
)  # fmt: skip
async def test_refusals_are_problem_json(
    client: httpx.AsyncClient, intake: FakeIntake, failure: Exception, status: int, code: str
) -> None:
    intake.failure = failure
    response = await client.post("/v1/nodes/n-1/heartbeats", content=b"{}")
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["error"]["code"] == code
    assert set(response.json()["error"]) == {"status", "title", "detail", "code"}
    if status == 503:
        assert response.headers["retry-after"] == "7"


async def test_an_oversized_body_is_refused_unread(
    client: httpx.AsyncClient, intake: FakeIntake
) -> None:
    response = await client.post("/v1/nodes/n-1/heartbeats", content=b"x" * (MAX_BODY_BYTES + 1))
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"
    assert intake.calls == []


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/nodes/n-1/heartbeats"),
        ("POST", "/v1/nodes/n.1/heartbeats"),
        ("POST", "/v1/nodes/a/b/heartbeats"),
        ("POST", "/v1/nodes/n-1/keys"),
        ("POST", "/v1/enrollments"),
    ],
)
async def test_everything_else_goes_to_the_framework(
    client: httpx.AsyncClient, intake: FakeIntake, method: str, path: str
) -> None:
    response = await client.request(method, path, content=b"{}" if method == "POST" else None)
    assert (response.status_code, response.text) == (299, f"framework {method} {path}")
    assert intake.calls == []


def test_the_fake_speaks_the_intakes_language() -> None:
    assert set(HeartbeatIntake.accept.__annotations__) == set(FakeIntake.accept.__annotations__)
