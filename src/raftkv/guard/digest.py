"""The apply digest: a hash chain over the effects of every applied Raft entry.

Owns: the effect encoding, the chain (``d_i = BLAKE2b-128(d_{i-1} || u64 i || effects_i)``,
``d_0 = GENESIS``), the bounded history index → digest and its persisted form (the chain head
and the history bucket), locating the first diverging index between two members, and the quorum
rule naming outliers.

Two members that applied the same entries to the same state hold the same digest at every index;
since each digest covers its predecessor, once two chains differ they differ at every later
index, which is what lets ``first_divergence`` binary-search for the first bad entry.

The rules of a comparison round (shared by the server's guard and the simulator's):
``majority_index`` is where members are compared first (the highest index a majority of voters
has applied, so one lagging member does not hold detection back), ``comparison_indexes`` the
lower indexes at which a voter behind it can still settle a split, ``judge`` the quorum rule,
and ``awaits_voters`` whether a split without a majority must wait for voters that did not
report rather than name anyone.

Wiring (the applier owns one ``ApplyDigest``; every call below runs on the apply thread):

- open / snapshot install: ``ApplyDigest.load(meta META_APPLY_DIGEST, the items of
  BUCKET_APPLY_DIGEST, fallback_index=consistent_index)`` (no head record: ``(consistent_index,
  GENESIS)`` on a fresh data dir);
- for every entry for which ``batch.begin_entry`` returned True, including entries with no data
  and entries whose request failed, call the ``recorder`` methods for each effect in the order
  the state changed, then ``recorder.finish(entry.index)``; indexes must be consecutive;
- before the batch transaction commits: ``digest.persist(tx)``, so the chain head and the
  history are durable together with the consistent index;
- after it committed: ``digest.commit()``; if the batch raised: ``digest.rollback()``.

``latest()``/``digest_at()`` only show committed entries: what a member reports to its peers is
always state that is durable in its backend.

The history survives a restart: the backend bucket ``BUCKET_APPLY_DIGEST`` holds it as one chunk
per apply batch (u64 big-endian first index → the digests of that index and the following ones,
16 bytes each), a run of adjacent chunks ending at the head, written and trimmed in the same
transaction as the head (one put per batch, not per entry), so after a crash a member still
answers for the ``capacity`` indexes before it and the first diverging entry can still be
found.  A backend file carries its own history (a snapshot or a repair installs the sender's:
the sender's chain up to the head the receiver now holds).  ``load`` keeps only the run ending
at the head; any other chunk (left by a version that did not keep the history, or cut off by a
gap) is stale, and the next ``persist`` deletes it.
"""

from __future__ import annotations

import hashlib
import struct
from collections import deque
from collections.abc import Callable, Collection, Hashable, Iterable, Mapping
from typing import Protocol, TypeVar

import crc32c

from raftkv.mvcc.backend import BUCKET_APPLY_DIGEST, BUCKET_META

DIGEST_SIZE = 16
GENESIS = bytes(DIGEST_SIZE)
"""The digest before index 1 (and of any chain head without a predecessor)."""

DEFAULT_HISTORY = 10_000
"""Committed indexes whose digest is kept for comparison (about 0.5 MB)."""

META_APPLY_DIGEST = b"applyDigest"
"""The backend meta-bucket key of the persisted chain head (``encode_head``)."""


class HistoryTxn(Protocol):
    """What ``ApplyDigest.persist`` needs of the batch's write transaction
    (``raftkv.mvcc.backend.WriteTxn``)."""

    def put(self, bucket: str, key: bytes, payload: bytes) -> None: ...

    def delete(self, bucket: str, key: bytes) -> bool: ...


_PERSON = b"raftkv/apply/v1"
# The unkeyed, personalised BLAKE2b-128 state before any input: ``copy()`` of it is the same
# hash as a new ``blake2b(digest_size=DIGEST_SIZE, person=_PERSON)``, set up once.
_BLAKE2B_EMPTY = hashlib.blake2b(digest_size=DIGEST_SIZE, person=_PERSON)
_INDEX = struct.Struct(">Q")
_PUT = struct.Struct(">BIIqqqq")
_DELETE = struct.Struct(">BIq")
_LEASE2 = struct.Struct(">Bqq")
_LEASE1 = struct.Struct(">Bq")
_MEMBER_SET = struct.Struct(">BQI")
_MEMBER_REMOVE = struct.Struct(">BQ")
_ALARM = struct.Struct(">BQI?")
_AUTH = struct.Struct(">BI?I")

_T_PUT = 1
_T_DELETE = 2
_T_LEASE_GRANT = 3
_T_LEASE_REVOKE = 4
_T_LEASE_CHECKPOINT = 5
_T_MEMBER_SET = 6
_T_MEMBER_REMOVE = 7
_T_ALARM = 8
_T_COMPACT = 9
_T_AUTH = 10
_T_CLUSTER = 11

_RECORD_MAGIC = b"RKAD"
_RECORD_VERSION = 1
_RECORD = struct.Struct(">4sBQ16s")
_CRC = struct.Struct(">I")


class DigestRecordError(ValueError):
    """A persisted chain head that does not decode (bad magic, version, length or CRC)."""


class NoOverlapError(ValueError):
    """Two digest histories share no index, so they cannot be compared."""


class EffectRecorder:
    """Encodes the effects of the entry being applied; ``finish`` folds them into the chain.

    Each effect is a tag byte and fixed-width fields, variable fields length-prefixed, so the
    encoding of a sequence of effects is injective.  Lease IDs, revisions, TTLs are int64;
    member IDs uint64; alarm types uint32.
    """

    __slots__ = ("_buf", "_chain")

    def __init__(self, chain: ApplyDigest) -> None:
        self._chain = chain
        self._buf = bytearray()

    def put(
        self, key: bytes, value: bytes, lease: int, mod_rev: int, create_rev: int, version: int
    ) -> None:
        """A key written (as stored: the value and lease kept, its revisions and version)."""
        buf = self._buf
        buf += _PUT.pack(_T_PUT, len(key), len(value), lease, mod_rev, create_rev, version)
        buf += key
        buf += value

    def delete(self, key: bytes, rev: int) -> None:
        """A key deleted (a tombstone written at main revision ``rev``)."""
        buf = self._buf
        buf += _DELETE.pack(_T_DELETE, len(key), rev)
        buf += key

    def compact(self, rev: int) -> None:
        """Compaction scheduled at main revision ``rev``."""
        self._buf += _LEASE1.pack(_T_COMPACT, rev)

    def lease_grant(self, lease_id: int, ttl: int) -> None:
        """A lease created with its granted TTL (after the minimum TTL was applied)."""
        self._buf += _LEASE2.pack(_T_LEASE_GRANT, lease_id, ttl)

    def lease_revoke(self, lease_id: int) -> None:
        """A lease deleted; its keys' deletions are recorded separately, after it."""
        self._buf += _LEASE1.pack(_T_LEASE_REVOKE, lease_id)

    def lease_checkpoint(self, lease_id: int, remaining: int) -> None:
        """A checkpoint recorded for an existing lease (remaining TTL as stored, >= 0)."""
        self._buf += _LEASE2.pack(_T_LEASE_CHECKPOINT, lease_id, remaining)

    def member_set(self, member_id: int, json_bytes: bytes) -> None:
        """A member added or updated; ``json_bytes`` is the record as stored in the bucket."""
        buf = self._buf
        buf += _MEMBER_SET.pack(_T_MEMBER_SET, member_id, len(json_bytes))
        buf += json_bytes

    def member_remove(self, member_id: int) -> None:
        """A member removed."""
        self._buf += _MEMBER_REMOVE.pack(_T_MEMBER_REMOVE, member_id)

    def alarm(self, member_id: int, alarm_type: int, active: bool) -> None:
        """An alarm raised (``active``) or cleared; only changes that altered the set."""
        self._buf += _ALARM.pack(_T_ALARM, member_id, alarm_type, active)

    def auth(self, key: bytes, value: bytes | None) -> None:
        """An auth-bucket record written (``value``) or deleted (None)."""
        buf = self._buf
        data = value if value is not None else b""
        buf += _AUTH.pack(_T_AUTH, len(key), value is not None, len(data))
        buf += key
        buf += data

    def cluster(self, key: bytes, value: bytes | None) -> None:
        """A cluster-bucket record (cluster version, downgrade, removed member) written
        (``value``) or deleted (None)."""
        buf = self._buf
        data = value if value is not None else b""
        buf += _AUTH.pack(_T_CLUSTER, len(key), value is not None, len(data))
        buf += key
        buf += data

    def discard(self) -> None:
        """Drop the effects recorded since the last ``finish`` (the entry is not applied)."""
        self._buf.clear()

    def finish(self, index: int) -> bytes:
        """Fold the recorded effects of entry ``index`` into the chain; returns its digest.

        ``index`` must be the chain head's index + 1 (``ValueError`` otherwise).
        """
        chain = self._chain
        if index != chain._head_index + 1:
            raise ValueError(
                f"apply digest: entry {index} finished after entry {chain._head_index}"
            )
        h = _BLAKE2B_EMPTY.copy()
        h.update(chain._head + _INDEX.pack(index))
        h.update(self._buf)
        digest = h.digest()
        self._buf.clear()
        chain._head_index = index
        chain._head = digest
        chain._pending.append((index, digest))
        return digest


class ApplyDigest:
    """The chain head (including entries applied in the open batch) and committed history."""

    def __init__(
        self, index: int = 0, digest: bytes = GENESIS, *, capacity: int = DEFAULT_HISTORY
    ) -> None:
        """A chain whose head is ``digest`` at ``index`` (a fresh member: 0, ``GENESIS``)."""
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self.recorder = EffectRecorder(self)
        self._pending: list[tuple[int, bytes]] = []
        self._order: deque[int] = deque()
        self._history: dict[int, bytes] = {}
        self._head_index = 0
        self._head = GENESIS
        # The persisted history (``BUCKET_APPLY_DIGEST``): one chunk per batch, keyed by its
        # first index.  ``_chunks``: the first indexes of the committed run's chunks, in order;
        # ``_stale``: chunk keys outside that run (the next persist deletes them);
        # ``_unwritten``: the point the chain was reset to, not yet in a chunk; ``_planned``:
        # what the open batch's persist wrote (new chunk keys) and how many old chunks it
        # dropped, applied to ``_chunks`` by ``commit``.
        self._chunks: deque[int] = deque()
        self._stale: list[int] = []
        self._unwritten: list[tuple[int, bytes]] = []
        self._planned: tuple[list[int], int] = ([], 0)
        self.reset(index, digest)

    @classmethod
    def from_record(
        cls, record: bytes | None, *, fallback_index: int = 0, capacity: int = DEFAULT_HISTORY
    ) -> ApplyDigest:
        """The chain restored from a persisted head alone (no history before it);
        ``(fallback_index, GENESIS)`` if None."""
        if record is None:
            return cls(fallback_index, GENESIS, capacity=capacity)
        index, digest = decode_head(record)
        return cls(index, digest, capacity=capacity)

    @classmethod
    def load(
        cls,
        record: bytes | None,
        history: Iterable[tuple[bytes, bytes]],
        *,
        fallback_index: int = 0,
        capacity: int = DEFAULT_HISTORY,
    ) -> ApplyDigest:
        """The chain restored from a persisted head and the chunks of ``BUCKET_APPLY_DIGEST``
        (its items in key order: u64 first index → that index's digest and the following
        ones', 16 bytes each).

        The history kept is the last ``capacity`` indexes of the run of adjacent chunks ending
        at the head with the head's digest; every other chunk is stale and the next ``persist``
        deletes it.  Raises ``DigestRecordError`` for a chunk that does not decode."""
        chain = cls.from_record(record, fallback_index=fallback_index, capacity=capacity)
        chunks: list[tuple[int, bytes]] = []
        for key, value in history:
            if len(key) != _INDEX.size or not value or len(value) % DIGEST_SIZE:
                raise DigestRecordError(
                    f"apply digest history chunk of {len(key)}+{len(value)} bytes"
                )
            chunks.append((_INDEX.unpack(key)[0], value))

        def last_of(chunk: tuple[int, bytes]) -> int:
            return chunk[0] + len(chunk[1]) // DIGEST_SIZE - 1

        run = len(chunks)  # chunks[run:] is the run ending at the head
        if (
            chunks
            and last_of(chunks[-1]) == chain._head_index
            and chunks[-1][1][-DIGEST_SIZE:] == chain._head
        ):
            run -= 1
            while run > 0 and last_of(chunks[run - 1]) == chunks[run][0] - 1:
                run -= 1
        entries = [
            (first + i, value[i * DIGEST_SIZE : (i + 1) * DIGEST_SIZE])
            for first, value in chunks[run:]
            for i in range(len(value) // DIGEST_SIZE)
        ][-capacity:]
        stale = [first for first, _value in chunks[:run]]
        if entries:  # they end with the head's own digest
            oldest = entries[0][0]
            kept = [chunk for chunk in chunks[run:] if last_of(chunk) >= oldest]
            stale += [first for first, _value in chunks[run : len(chunks) - len(kept)]]
            chain._order.clear()
            chain._history.clear()
            chain._remember(entries)
            chain._chunks.extend(first for first, _value in kept)
            chain._unwritten.clear()
        chain._stale = stale
        return chain

    def reset(self, index: int, digest: bytes) -> None:
        """Forget everything and continue the chain from ``digest`` at ``index``.

        For a backend whose history bucket is empty (a restore builds a new one): the indexes
        persisted there are not known here, so none is deleted.
        """
        if len(digest) != DIGEST_SIZE or index < 0:
            raise ValueError("apply digest head needs a 16-byte digest and an index >= 0")
        self.recorder.discard()
        self._pending.clear()
        self._order.clear()
        self._history.clear()
        self._head_index = index
        self._head = digest
        self._remember([(index, digest)])
        self._chunks.clear()
        self._unwritten = [(index, digest)]

    # -- batches ------------------------------------------------------------------------

    def persist(self, tx: HistoryTxn) -> None:
        """Write the chain head, and the entries finished since the last commit as one chunk
        (plus the point the chain was reset to, if not yet written), into the batch's
        transaction ``tx``; delete the chunks that hold only indexes ``commit`` will evict, and
        stale ones.  Once ``tx`` commits, the persisted run ends at the head and holds the
        committed history (at most one chunk more).  Called once per batch, after its last
        ``finish``: one put per batch, not per entry."""
        tx.put(BUCKET_META, META_APPLY_DIGEST, self.encode_head())
        for first in self._stale:
            tx.delete(BUCKET_APPLY_DIGEST, _INDEX.pack(first))
        new: list[int] = []
        for index, digest in self._unwritten:
            tx.put(BUCKET_APPLY_DIGEST, _INDEX.pack(index), digest)
            new.append(index)
        pending = self._pending
        if pending:
            first = pending[0][0]
            tx.put(BUCKET_APPLY_DIGEST, _INDEX.pack(first), b"".join(d for _i, d in pending))
            new.append(first)
        # The oldest index kept once committed (the history is consecutive indexes).
        oldest = max(self._order[0], self._head_index - self.capacity + 1)
        chunks = self._chunks

        def first_of(k: int) -> int:  # the k-th chunk once this batch's are added
            return chunks[k] if k < len(chunks) else new[k - len(chunks)]

        total = len(chunks) + len(new)
        dropped = 0  # a chunk holds only evicted indexes when the next one starts by ``oldest``
        while dropped + 1 < total and first_of(dropped + 1) <= oldest:
            tx.delete(BUCKET_APPLY_DIGEST, _INDEX.pack(first_of(dropped)))
            dropped += 1
        self._planned = (new, dropped)

    def commit(self) -> None:
        """The batch holding the entries finished since the last commit is durable."""
        new, dropped = self._planned
        self._chunks.extend(new)
        for _ in range(dropped):
            self._chunks.popleft()
        self._planned = ([], 0)
        self._stale.clear()
        self._unwritten.clear()
        if self._pending:
            self._remember(self._pending)
            self._pending.clear()

    def rollback(self) -> None:
        """The batch was aborted: the head goes back to the last committed entry."""
        self.recorder.discard()
        self._pending.clear()
        self._planned = ([], 0)
        self._head_index = self._order[-1]
        self._head = self._history[self._head_index]

    def encode_head(self) -> bytes:
        """The chain head (pending entries included), for the batch's meta-bucket record."""
        return encode_head(self._head_index, self._head)

    # -- queries (committed entries only) -----------------------------------------------

    def latest(self) -> tuple[int, bytes]:
        """(index, digest) of the last committed entry."""
        index = self._order[-1]
        return index, self._history[index]

    def oldest_index(self) -> int:
        """The first index whose digest is still kept."""
        return self._order[0]

    def digest_at(self, index: int) -> bytes | None:
        """The digest after applying entry ``index``; None if evicted, pending or not applied."""
        return self._history.get(index)

    def _remember(self, entries: list[tuple[int, bytes]]) -> None:
        """Keep ``(index, digest)`` pairs (in index order), evicting the oldest past
        ``capacity``."""
        history, order = self._history, self._order
        history.update(entries)
        order.extend([index for index, _digest in entries])
        for _ in range(len(order) - self.capacity):
            del history[order.popleft()]


# -- persistence ------------------------------------------------------------------------


def encode_head(index: int, digest: bytes) -> bytes:
    """33 bytes: magic ``RKAD``, version 1, u64 index, 16-byte digest, CRC32C of the rest."""
    body = _RECORD.pack(_RECORD_MAGIC, _RECORD_VERSION, index, digest)
    return body + _CRC.pack(crc32c.crc32c(body))


def decode_head(data: bytes) -> tuple[int, bytes]:
    """(index, digest) of an ``encode_head`` record; raises ``DigestRecordError`` only."""
    if len(data) != _RECORD.size + _CRC.size:
        raise DigestRecordError(f"apply digest record of {len(data)} bytes")
    body = data[: _RECORD.size]
    if _CRC.unpack(data[_RECORD.size :])[0] != crc32c.crc32c(body):
        raise DigestRecordError("apply digest record fails its CRC")
    magic, version, index, digest = _RECORD.unpack(body)
    if magic != _RECORD_MAGIC or version != _RECORD_VERSION:
        raise DigestRecordError(f"apply digest record magic {magic!r} version {version}")
    return index, digest


# -- comparison -------------------------------------------------------------------------


def first_divergence(
    local: ApplyDigest,
    remote_lookup: Callable[[int], bytes | None],
    remote_range: tuple[int, int] | None = None,
) -> int | None:
    """The first index at which ``local`` and a remote chain differ; None if they agree.

    ``remote_lookup(i)`` is the remote's digest at ``i``; ``remote_range`` (oldest, latest) the
    indexes it knows (default: the same as ``local``'s).  Only the overlap is compared, with
    O(log n) lookups.  When the chains already differ at the overlap's first index, that index
    is returned: the divergence happened there or earlier (exact when the overlap starts at the
    local chain's first kept index and that is the chain origin).  Raises ``NoOverlapError``
    when the ranges do not overlap or a lookup inside them returns None.
    """
    lo, hi = local.oldest_index(), local.latest()[0]
    if remote_range is not None:
        lo, hi = max(lo, remote_range[0]), min(hi, remote_range[1])
    if lo > hi:
        raise NoOverlapError(f"no common index (overlap {lo}..{hi})")

    def same(i: int) -> bool:
        mine, theirs = local.digest_at(i), remote_lookup(i)
        if mine is None or theirs is None:
            raise NoOverlapError(f"digest of index {i} missing while comparing {lo}..{hi}")
        return mine == theirs

    if same(hi):
        return None
    return bisect_divergence(lo, hi, same)


D = TypeVar("D", bound=Hashable)


def majority_index(applied: Mapping[int, int], voters: Collection[int]) -> int:
    """The highest index a majority of ALL ``voters`` has applied (``applied``: member ->
    latest applied index of each member that reported); 0 when fewer than a majority reported.
    """
    indexes = sorted((applied[v] for v in set(voters) if v in applied), reverse=True)
    quorum = len(set(voters)) // 2 + 1
    return indexes[quorum - 1] if len(indexes) >= quorum else 0


def comparison_indexes(ranges: Mapping[int, tuple[int, int]], voters: Collection[int]) -> list[int]:
    """Where to judge a round, in order: ``majority_index``, then every reporter's latest index
    below it, highest first (empty when no majority reported).

    ``ranges``: member -> (oldest index whose digest it keeps, latest applied index).  When the
    members holding the majority index disagree without a majority, a voter behind them still
    tells which side left the chain as soon as it applied an index past the divergence.
    """
    top = majority_index({m: r[1] for m, r in ranges.items()}, voters)
    if top == 0:
        return []
    return sorted({top, *(last for _, last in ranges.values() if last < top)}, reverse=True)


def awaits_voters(
    reports: Mapping[int, Hashable],
    voters: Collection[int],
    origins: Mapping[int, int] | None = None,
) -> bool:
    """Whether a round without a majority may still be settled by voters that did not report.

    True when some value would reach a majority of ALL voters if every missing voter reported
    it (votes counted as ``judge`` counts them): naming anyone now could name the healthy side,
    so the evidence is kept pending.  False means no majority can ever form on these reports
    (the cluster cannot tell who is right).
    """
    voter_set = set(voters)
    votes = _votes(reports, voter_set, origins)
    missing = len(voter_set - set(reports))
    quorum = len(voter_set) // 2 + 1
    return missing > 0 and max(votes.values(), default=0) + missing >= quorum


def bisect_divergence(lo: int, hi: int, same: Callable[[int], bool]) -> int:
    """The first index in (lo, hi] where ``same`` turns False, given ``same(hi)`` is False;
    ``lo`` itself when ``same(lo)`` is False already (the divergence is at ``lo`` or earlier).
    """
    if not same(lo):
        return lo
    while hi - lo > 1:  # invariant: same at lo, different at hi
        mid = (lo + hi) // 2
        if same(mid):
            lo = mid
        else:
            hi = mid
    return hi


def judge(
    reports: Mapping[int, D],
    voters: Collection[int] | None = None,
    origins: Mapping[int, int] | None = None,
) -> tuple[D | None, list[int]]:
    """Which value (digest or state hash, all for the same index) is the truth, and who is not.

    The truth is the value reported by a majority of ALL voters (default: every reporter is a
    voter); a voter that did not report counts against every value.  ``origins`` (member ->
    whose independent applies its state stands for, ``raftkv.guard.vouch.origins_of``; default:
    itself) makes a value's votes the number of distinct origins among the voters holding it:
    an unconfirmed copy of a member's state is not a second vote for it.  Returns (truth,
    sorted IDs of reporters holding another value) — learners included — or, without a
    majority, (None, every reporter sorted): nobody can be trusted.
    """
    voter_set = set(reports) if voters is None else set(voters)
    votes = _votes(reports, voter_set, origins)
    quorum = len(voter_set) // 2 + 1
    truth = next((v for v, n in votes.items() if n >= quorum), None)
    if truth is None:
        return None, sorted(reports)
    return truth, sorted(m for m, v in reports.items() if v != truth)


def tied_by_copies(
    reports: Mapping[int, Hashable], voters: Collection[int], origins: Mapping[int, int]
) -> bool:
    """Whether these reports lack a majority only because unconfirmed copies do not count as
    votes of their own (``judge`` with ``origins`` finds none, without it one value has a
    majority): the copies' origin and the others are two sides no vote can settle, and nobody
    is named on them (an operator compares the members' files with ``raftkv check data``)."""
    if judge(reports, voters, origins)[0] is not None:
        return False
    return judge(reports, voters)[0] is not None


def _votes(
    reports: Mapping[int, D], voter_set: set[int], origins: Mapping[int, int] | None
) -> dict[D, int]:
    """value -> the number of distinct origins among the voters that reported it."""
    holders: dict[D, set[int]] = {}
    for member, value in reports.items():
        if member in voter_set:
            origin = origins.get(member, member) if origins is not None else member
            holders.setdefault(value, set()).add(origin)
    return {value: len(who) for value, who in holders.items()}
