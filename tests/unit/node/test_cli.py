"""`b3iq-host` commands against a home in a temp dir (no daemon needed)."""

import stat
from pathlib import Path

import pytest

from node.cli import main
from node.identity import load_identity
from node.receipts import ReceiptStore, Timings, Usage, issue_receipt
from node.state import Database


def run(home: Path, *args: str) -> int:
    return main(["--home", str(home), *args])


def test_init_keys_and_wizard(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "home"
    assert run(home, "init") == 0
    first = capsys.readouterr().out
    assert "b3iq_setup_" in first
    assert stat.S_IMODE((home / "identity.ed25519").stat().st_mode) == 0o600
    assert run(home, "init") == 0
    assert "b3iq_setup_" not in capsys.readouterr().out  # shown once

    assert run(home, "keys", "create", "--name", "ci", "--models", "tiny") == 0
    secret = next(w for w in capsys.readouterr().out.split() if w.startswith("b3iq_local_"))
    out_file = tmp_path / "key"
    assert run(home, "keys", "create", "--name", "f", "--out", str(out_file)) == 0
    assert stat.S_IMODE(out_file.stat().st_mode) == 0o600
    assert out_file.read_text().strip() not in capsys.readouterr().out
    public_id = secret.removeprefix("b3iq_local_")[:12]
    assert run(home, "keys", "revoke", public_id) == 0
    assert run(home, "keys", "revoke", public_id) == 1
    capsys.readouterr()
    assert run(home, "keys", "list") == 0
    listing = capsys.readouterr().out
    assert "revoked" in listing
    assert secret not in listing

    assert run(home, "wizard-url", "--with-token") == 0
    assert "/setup/?token=b3iq_setup_" in capsys.readouterr().out


def test_models_and_receipts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "home"
    run(home, "init")
    model = tmp_path / "tiny.gguf"
    assert run(home, "models", "make-tiny", str(model)) == 0
    assert run(home, "models", "add", str(model), "--name", "t") == 0
    assert run(home, "models", "add", "--url", "http://127.0.0.1:11434/v1", "--name", "o") == 0
    capsys.readouterr()
    assert run(home, "models", "list") == 0
    assert "llama_cpp" in capsys.readouterr().out
    assert run(home, "models", "remove", "o") == 0

    db = Database(home / "node.sqlite3")
    identity = load_identity(db, home / "identity.ed25519")
    store = ReceiptStore(db)
    store.add(
        issue_receipt(
            identity.signer,
            node_id=identity.node_id,
            model="t",
            runtime_kind="llama_cpp",
            stream=False,
            finish_reason="stop",
            usage=Usage(1, 2, 3),
            timings=Timings(queue_us=0, ttft_us=1000, latency_us=2000),
            request_digest="a" * 64,
            response_digest="b" * 64,
        )
    )
    capsys.readouterr()
    assert run(home, "receipts", "verify") == 0
    assert "1 of 1 receipts verified" in capsys.readouterr().out
    db.execute("UPDATE receipts SET signature = ?", ("A" * 86,))
    assert run(home, "receipts", "verify") == 1
    assert run(home, "receipts", "list") == 0


def test_chat_refuses_a_key_missing_from_everywhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("B3IQ_LOCAL_KEY", raising=False)
    monkeypatch.delenv("B3IQ_LOCAL_KEY_FILE", raising=False)
    with pytest.raises(SystemExit, match="--api-key-file"):
        run(tmp_path, "chat", "hi")


def test_run_refuses_a_lan_address_without_the_flag(tmp_path: Path) -> None:
    run(tmp_path, "init")
    with pytest.raises(SystemExit, match="--allow-lan"):
        run(tmp_path, "run", "--host", "0.0.0.0")
