"""Named errors of the lease subsystem.

Owns: the conditions a caller of the lessor must handle, with etcd's lessor
messages (``server/lease/lessor.go``).  The gRPC layer maps them to etcd's wire
errors ("etcdserver: requested lease not found", "etcdserver: lease already
exists", "etcdserver: too large lease TTL", "etcdserver: not leader").

Two families, as the rest of raftkv:
- ``LeaseError`` subclasses are answers to a request (an applied entry or a
  keepalive): deterministic, returned to the client, never fatal;
- ``LeaseCorruptError`` means the persisted lease bucket holds bytes that are
  not a lease record: the member must stop serving, not guess.

Misuse of the API by the server (an ID outside int64, a missing ``now`` on the
primary) raises ``ValueError``: it is a bug, not a client condition.
"""

from __future__ import annotations


class LeaseError(Exception):
    """Base of every lease condition reported to a client."""


class LeaseNotFoundError(LeaseError):
    """No lease with that ID exists (also: lease ID 0 given to ``grant``)."""

    def __init__(self, msg: str = "lease not found") -> None:
        super().__init__(msg)


class LeaseExpiredError(LeaseNotFoundError):
    """A keepalive hit a lease whose expiry has passed but whose revoke is not applied yet.

    It is a ``LeaseNotFoundError`` so a caller that does not care answers
    "lease not found"; etcd's server instead waits until the revoke is applied
    (then: not found) or the member is demoted (then: not primary, the client
    retries at the new leader, where the lease may still live).
    """


class LeaseExistsError(LeaseError):
    """``grant`` with an ID that is already in use."""

    def __init__(self, msg: str = "lease already exists") -> None:
        super().__init__(msg)


class LeaseTTLTooLargeError(LeaseError):
    """``grant`` with a TTL above ``MAX_LEASE_TTL``."""

    def __init__(self, msg: str = "too large lease TTL") -> None:
        super().__init__(msg)


class NotPrimaryError(LeaseError):
    """A leader-only operation (keepalive) reached a member that is not the primary lessor."""

    def __init__(self, msg: str = "not a primary lessor") -> None:
        super().__init__(msg)


class LeaseCorruptError(Exception):
    """A persisted lease record cannot be decoded (size, version, CRC or ID mismatch)."""
