"""A snapshot install swaps the backend under a WatchableStore: watchers survive and catch up."""

from __future__ import annotations

from pathlib import Path

from raftkv.mvcc import Backend, BackendConfig, KVStore, PutRequest, QueueSink, WatchableStore
from raftkv.mvcc.types import WriteRequest
from tests.mvcc.conftest import SMALL_MAP, open_store


def _apply(s: KVStore, *reqs: WriteRequest) -> None:
    start = s.consistent_index + 1
    s.apply_batch([(start + i, 1, r) for i, r in enumerate(reqs)])


def test_watchers_catch_up_from_the_new_backend(tmp_path: Path) -> None:
    # "leader" history: k written at revisions 2..6
    leader = open_store(tmp_path / "leader")
    for i in range(5):
        _apply(leader, PutRequest(b"k", b"%d" % i))
    (tmp_path / "copy").mkdir()
    leader.backend.env.copy(str(tmp_path / "copy"))
    leader.backend.close()

    # "follower" saw only the first two writes, with a synced watcher on k
    follower = open_store(tmp_path / "follower")
    for i in range(2):
        _apply(follower, PutRequest(b"k", b"%d" % i))
    ws = WatchableStore(follower)
    sink = QueueSink()
    wid = ws.watch(b"k", sink=sink)
    assert ws.is_synced(wid)

    old = follower.backend
    ws.restore(Backend(tmp_path / "copy", BackendConfig(map_size=SMALL_MAP, sync_mode="nosync")))
    old.close()
    assert follower.current_revision == 6
    assert not ws.is_synced(wid)
    while ws.sync_watchers():
        pass
    revs = [e.kv.mod_revision for r in sink.drain() for e in r.events]
    assert revs == [4, 5, 6]  # exactly what the watcher had not seen, nothing twice
    _apply(follower, PutRequest(b"k", b"after"))
    assert [e.kv.value for r in sink.drain() for e in r.events] == [b"after"]
    follower.backend.close()
