"""The per-key revision history (etcd's keyIndex and generation).

Owns: for one user key, its generations: each generation is the run of
revisions from a creation to a deletion (tombstone) or to now.  Answers "which
revision of this key is visible at main revision R" and drops history on
compaction.  Revisions are packed ints (see ``revision.py``); "main" arguments
are plain main revisions.

Example: put@1, put@2, delete@3, put@4 gives generations
``{1, 2, 3(t)}`` and ``{4}``; after a delete the last generation is empty.

Contracts (as etcd):
- revisions are added in strictly increasing order (violations raise
  ``AssertionError``: a broken invariant, not a request error);
- ``compact(R)`` keeps, for the generation visible at R, the greatest revision
  <= R (a tombstone at exactly R is kept so a watcher from R still sees it) and
  drops older generations; ``keep(R)`` reports the same set without changing
  anything and excludes a tombstone at R (HashKV relies on that).
"""

from __future__ import annotations

from bisect import bisect_right

from raftkv.mvcc.revision import SUB_BITS


class Generation:
    __slots__ = ("created", "revs", "ver")

    def __init__(self, created: int = 0, ver: int = 0, revs: list[int] | None = None) -> None:
        self.created = created  # packed revision of the first put
        self.ver = ver  # version of the key at the last revision of this generation
        self.revs: list[int] = revs if revs is not None else []

    def find_revision_index(self, at_main: int) -> int:
        """Index of the last revision with main <= at_main, or -1."""
        return bisect_right(self.revs, ((at_main + 1) << SUB_BITS) - 1) - 1

    def __repr__(self) -> str:
        return f"Generation(created={self.created}, ver={self.ver}, revs={self.revs})"


class KeyIndex:
    __slots__ = ("generations", "key", "modified")

    def __init__(self, key: bytes) -> None:
        self.key = key
        self.modified = 0
        self.generations: list[Generation] = []

    def is_empty(self) -> bool:
        return len(self.generations) == 1 and not self.generations[0].revs

    def put(self, rev: int) -> None:
        assert rev > self.modified, f"put {rev} not after modified {self.modified}"
        gens = self.generations
        if not gens:
            gens.append(Generation())
        g = gens[-1]
        if not g.revs:
            g.created = rev
        g.revs.append(rev)
        g.ver += 1
        self.modified = rev

    def restore(self, created: int, modified: int, ver: int) -> None:
        """First revision seen at start-up for a live key whose history may be compacted."""
        assert not self.generations
        self.modified = modified
        self.generations.append(Generation(created, ver, [modified]))

    def restore_tombstone(self, rev: int) -> None:
        """A tombstone seen first at start-up (the key's earlier history was compacted)."""
        self.restore(0, rev, 1)
        self.generations.append(Generation())

    def tombstone(self, rev: int) -> bool:
        """Delete the key at ``rev``; False if it is not alive (etcd's ErrRevisionNotFound)."""
        assert not self.is_empty(), "tombstone on an empty key index"
        if not self.generations[-1].revs:
            return False
        self.put(rev)
        self.generations.append(Generation())
        return True

    def find_generation(self, at_main: int) -> Generation | None:
        gens = self.generations
        last = len(gens) - 1
        cg = last
        while cg >= 0:
            g = gens[cg]
            if not g.revs:
                cg -= 1
                continue
            if cg != last and (g.revs[-1] >> SUB_BITS) <= at_main:
                return None
            if (g.revs[0] >> SUB_BITS) <= at_main:
                return g
            cg -= 1
        return None

    def get(self, at_main: int) -> tuple[int, int, int] | None:
        """(modified, created, version) visible at ``at_main``, or None if absent then."""
        gens = self.generations
        g = gens[-1]
        revs = g.revs
        # Fast path: reading at or after the last modification of a live key.
        if revs and (self.modified >> SUB_BITS) <= at_main:
            return revs[-1], g.created, g.ver
        found = self.find_generation(at_main)
        if found is None or not found.revs:
            return None
        n = found.find_revision_index(at_main)
        if n == -1:
            return None
        return found.revs[n], found.created, found.ver - (len(found.revs) - n - 1)

    def since(self, main: int) -> list[int]:
        """Revisions with main >= ``main``; of several in one main revision, the last."""
        since = main << SUB_BITS
        gens = self.generations
        gi = len(gens) - 1
        while gi > 0:
            g = gens[gi]
            if g.revs and since > g.created:
                break
            gi -= 1
        out: list[int] = []
        last = 0
        for g in gens[gi:]:
            for r in g.revs:
                if since > r:
                    continue
                if (r >> SUB_BITS) == last:
                    out[-1] = r
                    continue
                out.append(r)
                last = r >> SUB_BITS
        return out

    def _do_compact(self, at_main: int, available: set[int]) -> tuple[int, int]:
        gens = self.generations
        gen_idx = 0
        g = gens[0]
        while gen_idx < len(gens) - 1:
            if (g.revs[-1] >> SUB_BITS) >= at_main:
                break
            gen_idx += 1
            g = gens[gen_idx]
        rev_idx = g.find_revision_index(at_main)
        if rev_idx != -1:
            available.add(g.revs[rev_idx])
        return gen_idx, rev_idx

    def compact(self, at_main: int, available: set[int]) -> None:
        assert not self.is_empty(), "compact on an empty key index"
        gen_idx, rev_idx = self._do_compact(at_main, available)
        g = self.generations[gen_idx]
        if g.revs and rev_idx != -1:
            del g.revs[:rev_idx]
        del self.generations[:gen_idx]

    def keep(self, at_main: int, available: set[int]) -> None:
        if self.is_empty():
            return
        gen_idx, rev_idx = self._do_compact(at_main, available)
        g = self.generations[gen_idx]
        if g.revs and rev_idx == len(g.revs) - 1 and gen_idx != len(self.generations) - 1:
            available.discard(g.revs[rev_idx])

    def __repr__(self) -> str:
        return f"KeyIndex({self.key!r}, modified={self.modified}, {self.generations})"
