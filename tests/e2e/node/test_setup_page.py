"""The setup page over plain HTTP form posts: claim, create a key, use it, revoke it."""

import re

import httpx

from node.owner import OwnerStore
from tests.e2e.node.conftest import Node

HELLO = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


def csrf_of(page: str) -> str:
    match = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
    assert match
    return match.group(1)


def test_claim_create_key_use_it_and_revoke(node: Node) -> None:
    token = OwnerStore(node.services.db).issue_setup_token()  # other tests may have claimed
    with httpx.Client(base_url=node.url, follow_redirects=True) as browser:
        assert "Claim this node" in browser.get(f"/setup/?token={token}").text
        refused = browser.post(
            "/setup/claim", data={"setup_token": "wrong", "password": "long-password"}
        )
        assert refused.status_code == 401
        claimed = browser.post(
            "/setup/claim", data={"setup_token": token, "password": "long-password"}
        )
        assert claimed.status_code == 200
        cookie = claimed.history[0].headers["set-cookie"].lower()
        assert "httponly" in cookie
        assert "samesite=strict" in cookie
        page = claimed.text
        assert 'id="inventory"' in page
        assert "local_convenience" in page

        stale = browser.post("/setup/keys", data={"name": "x", "csrf": "0"})
        assert stale.status_code == 403
        created = browser.post(
            "/setup/keys",
            data={
                "name": "from-setup",
                "models": "tiny",
                "endpoints": "chat",
                "csrf": csrf_of(page),
            },
        )
        secret = re.search(r'id="new-secret">(b3iq_local_[^<]+)<', created.text)
        assert secret
        assert created.headers["cache-control"] == "no-store"
        listing = browser.get("/setup/")
        assert secret.group(1) not in listing.text  # shown exactly once

        headers = {"Authorization": f"Bearer {secret.group(1)}"}
        used = httpx.post(f"{node.url}/v1/chat/completions", json=HELLO, headers=headers)
        assert used.status_code == 200
        receipts = browser.get("/setup/").text.split('id="receipts"')[1]
        assert "<td>tiny</td>" in receipts

        public_id = secret.group(1).removeprefix("b3iq_local_")[:12]
        page = browser.get("/setup/").text
        browser.post(f"/setup/keys/{public_id}/revoke", data={"csrf": csrf_of(page)})
        again = httpx.post(f"{node.url}/v1/chat/completions", json=HELLO, headers=headers)
        assert again.status_code == 401
        assert again.json()["error"]["code"] == "api_key_revoked"

        browser.post("/setup/logout", data={"csrf": csrf_of(browser.get("/setup/").text)})
        assert "Sign in" in browser.get("/setup/").text
        assert "Sign in" in browser.post("/setup/login", data={"password": "nope"}).text
        assert 'id="keys"' in browser.post("/setup/login", data={"password": "long-password"}).text


def test_setup_pages_without_a_session_redirect(node: Node) -> None:
    response = httpx.post(f"{node.url}/setup/keys", data={"name": "x"})
    assert response.status_code == 303
