import time
from pathlib import Path

from node.state import CHECKPOINT_EVERY_WRITES, Database


def test_commits_only_append_and_a_thread_copies_the_wal_back(tmp_path: Path) -> None:
    path = tmp_path / "node.sqlite3"
    db = Database(path)
    assert db.one("PRAGMA wal_autocheckpoint")[0] == 0  # type: ignore[index]
    before = path.stat().st_size
    for i in range(CHECKPOINT_EVERY_WRITES - 1):
        db.set_meta(f"k{i}", "x" * 2000)
    assert path.stat().st_size == before  # ~100 pages so far, all of them in the WAL only
    db.set_meta("last", "x")  # this commit hands a checkpoint to the thread
    deadline = time.monotonic() + 10
    while path.stat().st_size == before:
        assert time.monotonic() < deadline, "no checkpoint copied the WAL into the file"
        time.sleep(0.01)
    db.close()
    reopened = Database(path)
    assert reopened.get_meta(f"k{CHECKPOINT_EVERY_WRITES - 2}") == "x" * 2000
    reopened.close()
