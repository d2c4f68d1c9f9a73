"""Unit tests of the leader's pending read-index queue."""

from __future__ import annotations

from raftkv.raft import Message, MessageType
from raftkv.raft.read_only import ReadOnly


def _req(ctx: bytes) -> Message:
    return Message(type=MessageType.MSG_READ_INDEX, context=ctx)


def test_acks_and_advance_release_in_order() -> None:
    ro = ReadOnly()
    ro.add_request(5, _req(b"a"))
    ro.add_request(6, _req(b"b"))
    ro.add_request(7, _req(b"c"))
    ro.add_request(9, _req(b"a"))  # duplicate context: ignored
    assert ro.last_pending_request_ctx() == b"c"
    assert ro.recv_ack(2, b"b") == {2}
    assert ro.recv_ack(3, b"b") == {2, 3}
    assert ro.recv_ack(3, b"zzz") is None
    # Confirming "b" confirms everything queued before it.
    released = ro.advance(b"b")
    assert [(r.req.context, r.index) for r in released] == [(b"a", 5), (b"b", 6)]
    assert ro.queue == [b"c"] and list(ro.pending) == [b"c"]
    assert ro.advance(b"b") == []
    assert [r.index for r in ro.advance(b"c")] == [7]
    assert ro.last_pending_request_ctx() == b""
