import pytest

from node.errors import NodeError
from node.keys import KEY_PREFIX, KeyStore, LocalKey, hash_secret, public_id_of, require_scope
from node.state import Database


@pytest.fixture
def store(tmp_path) -> KeyStore:  # type: ignore[no-untyped-def]
    return KeyStore(Database(tmp_path / "node.sqlite3"))


def test_secret_has_the_prefix_and_is_stored_only_hashed(store: KeyStore, tmp_path) -> None:  # type: ignore[no-untyped-def]
    key, secret = store.create("ci")
    assert secret.startswith(KEY_PREFIX)
    assert public_id_of(secret) == key.public_id
    raw = (tmp_path / "node.sqlite3").read_bytes()
    assert secret.encode() not in raw
    assert store.get(key.public_id) == key


def test_authenticate_and_last_used(store: KeyStore) -> None:
    key, secret = store.create("ci", now=100.0)
    assert store.authenticate(secret, now=200.0).public_id == key.public_id
    assert store.get(key.public_id).last_used_at == 200.0  # type: ignore[union-attr]
    store.authenticate(secret, now=201.0)  # within the granularity: no write
    assert store.get(key.public_id).last_used_at == 200.0  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "presented", [None, "", "b3iq_local_short", "sk-openai", KEY_PREFIX + "0" * 12 + "_" + "a" * 43]
)
def test_unknown_or_malformed_keys_are_401(store: KeyStore, presented: str | None) -> None:
    with pytest.raises(NodeError) as error:
        store.authenticate(presented)
    assert error.value.status == 401
    assert error.value.family == "unauthorized"


def test_a_wrong_secret_with_a_real_public_id_is_refused(store: KeyStore) -> None:
    _, secret = store.create("ci")
    with pytest.raises(NodeError, match="invalid"):
        store.authenticate(secret[:-1] + ("A" if secret[-1] != "A" else "B"))


def test_revoked_and_expired(store: KeyStore) -> None:
    revoked, revoked_secret = store.create("a")
    assert store.revoke(revoked.public_id)
    assert not store.revoke(revoked.public_id)
    _, expired_secret = store.create("b", expires_at=50.0)
    for secret, code in ((revoked_secret, "api_key_revoked"), (expired_secret, "api_key_expired")):
        with pytest.raises(NodeError) as error:
            store.authenticate(secret, now=100.0)
        assert error.value.code == code


def test_scopes() -> None:
    key = LocalKey(public_id="x", name="n", models=("tiny",), endpoints=("chat",), created_at=0)
    require_scope(key, "chat", "tiny")
    for endpoint, model in (("models", None), ("chat", "other")):
        with pytest.raises(NodeError) as denied:
            require_scope(key, endpoint, model)
        assert denied.value.status == 403


def test_unknown_endpoint_scope_is_refused(store: KeyStore) -> None:
    with pytest.raises(NodeError, match="unknown endpoint scope"):
        store.create("x", endpoints=("admin",))


def test_hash_is_stable_and_not_the_secret() -> None:
    assert hash_secret("abc") == hash_secret("abc") != "abc"
