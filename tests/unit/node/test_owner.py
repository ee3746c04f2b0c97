from node.owner import OwnerStore, check_password, hash_password
from node.state import Database


def test_setup_token_is_one_time_and_stored_hashed(tmp_path) -> None:  # type: ignore[no-untyped-def]
    db = Database(tmp_path / "db.sqlite3")
    owner = OwnerStore(db)
    token = owner.issue_setup_token()
    assert db.get_meta("setup_token_hash") != token
    assert not owner.claim("wrong", "password1")
    assert owner.claim(token, "password1")
    assert owner.claimed
    assert not owner.claim(token, "password2")
    assert owner.login("password1")
    assert not owner.login("password2")


def test_recovery_token_ends_old_sessions(tmp_path) -> None:  # type: ignore[no-untyped-def]
    owner = OwnerStore(Database(tmp_path / "db.sqlite3"))
    owner.claim(owner.issue_setup_token(), "first-password")
    session = owner.open_session()
    assert owner.session_valid(session)
    assert owner.claim(owner.issue_setup_token(), "second-password")
    assert not owner.session_valid(session)
    assert owner.login("second-password")


def test_sessions_expire(tmp_path) -> None:  # type: ignore[no-untyped-def]
    owner = OwnerStore(Database(tmp_path / "db.sqlite3"), session_ttl_s=10)
    session = owner.open_session(now=100.0)
    assert owner.session_valid(session, now=105.0)
    assert not owner.session_valid(session, now=111.0)
    assert not owner.session_valid(None)


def test_password_hash() -> None:
    stored = hash_password("hunter22")
    assert check_password("hunter22", stored)
    assert not check_password("hunter23", stored)
    assert not check_password("x", "garbage")
