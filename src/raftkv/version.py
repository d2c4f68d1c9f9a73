"""Versions: this binary's, the cluster's, the data dir's, and the etcd API level shown to
etcd clients.

Vocabulary (etcd's, applied to raftkv's own numbering):
- server version: this binary's release (``raftkv.__version__``, e.g. ``0.2.0``);
- cluster version: ``major.minor`` every voter runs at least, decided by the leader (the lowest
  among the voters' published server versions) and replicated, so every member gates features
  on the same value;
- storage version: the layout of the data dir's backend, recorded in it; a binary refuses a
  data dir whose storage version is newer than its own;
- etcd API version: the etcd release whose v3 API raftkv serves; etcd clients read it from
  ``Status.version`` and ``/version`` and some gate features on it, so it is what they see there.

Compatibility (etcd's rule, ``admitted``): a member serves a cluster whose version is its own
``major.minor`` or one minor below (a rolling upgrade or downgrade); older or newer members are
refused.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from raftkv import __version__

ETCD_API_VERSION = "3.5.0"
"""The etcd release whose API this raftkv serves (what etcd clients see as the version)."""


class Version(NamedTuple):
    major: int
    minor: int
    patch: int = 0

    @classmethod
    def parse(cls, text: str) -> Version:
        """``1.2`` or ``1.2.3`` (a pre-release or build suffix is ignored); ValueError else."""
        m = re.fullmatch(r"v?(\d+)\.(\d+)(?:\.(\d+))?(?:[-+].*)?", text.strip())
        if m is None:
            raise ValueError(f"invalid version {text!r}: expected MAJOR.MINOR[.PATCH]")
        return cls(int(m[1]), int(m[2]), int(m[3] or 0))

    @property
    def minor_version(self) -> Version:
        """This version with the patch level dropped: what cluster versions are made of."""
        return Version(self.major, self.minor)

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"

    def short(self) -> str:
        return f"{self.major}.{self.minor}"

    def next_minor(self) -> Version:
        return Version(self.major, self.minor + 1)

    def previous_minor(self) -> Version | None:
        return Version(self.major, self.minor - 1) if self.minor > 0 else None


SERVER_VERSION = Version.parse(__version__)
STORAGE_VERSION = SERVER_VERSION.minor_version
"""The storage version this binary writes (and the newest it reads)."""

MIN_CLUSTER_VERSION = SERVER_VERSION.previous_minor() or SERVER_VERSION.minor_version
"""The lowest cluster version this binary may join: one minor below its own."""


def admitted(server: Version, cluster: Version) -> bool:
    """Whether a member running ``server`` may serve a cluster at version ``cluster``: the
    cluster version is at most its own ``major.minor`` and at least one minor below it."""
    lowest = server.previous_minor() or server.minor_version
    return lowest <= cluster.minor_version <= server.minor_version
