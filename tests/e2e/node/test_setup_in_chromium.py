"""The setup page in headless Chromium (Debian's `chromium`), driven over CDP."""

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from node.owner import OwnerStore
from tests.e2e.node.cdp import Page
from tests.e2e.node.conftest import Node, free_port

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="needs Debian's chromium (apt-get install chromium)"
)


@pytest.fixture
def page(tmp_path: Path) -> Iterator[Page]:
    port = free_port()
    browser = subprocess.Popen(
        [
            CHROMIUM,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            f"--remote-debugging-port={port}",
            f"--user-data-dir={tmp_path / 'profile'}",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                targets = httpx.get(f"http://127.0.0.1:{port}/json/list").json()
                ws = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
                break
            except (httpx.HTTPError, StopIteration):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        page = Page(ws)
        yield page
        page.ws.close()
    finally:
        browser.terminate()
        browser.wait(10)


def test_claim_create_a_key_and_use_it(node: Node, page: Page) -> None:
    token = OwnerStore(node.services.db).issue_setup_token()  # what wizard-url --with-token does
    page.call("Page.navigate", url=f"{node.url}/setup/?token={token}")
    page.wait_for("document.getElementById('claim-form') !== null")
    page.eval(
        "document.getElementById('password').value = 'chromium-password';"
        "document.getElementById('claim-form').submit()"
    )
    page.wait_for("document.getElementById('create-key') !== null")
    assert page.eval("document.cookie") == ""  # the session cookie is HttpOnly
    assert "local_convenience" in page.eval("document.getElementById('profiles').innerText")
    page.eval(
        "document.getElementById('key-name').value = 'browser';"
        "document.getElementById('create-key').submit()"
    )
    secret = page.wait_for(
        "document.getElementById('new-secret') && document.getElementById('new-secret').innerText"
    )
    assert secret.startswith("b3iq_local_")
    reply = httpx.post(
        f"{node.url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {secret}"},
        json={"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3},
    )
    assert reply.status_code == 200
    assert reply.json()["usage"]["completion_tokens"] <= 3
