"""The application-level consistency inspector behind ``raftkv check consistency``.

Owns: gathering what each member of a live cluster (raftkv or etcd) says about its state over the
v3 API and the members' ``/metrics`` (``gather``; raftkv's versions, sent as metadata of Status,
are read by ``status``, which ``raftkv endpoint status`` uses too), deciding whether the members
agree and explaining each disagreement in one line (``verdict``), printing the result
(``render``), and the ``--watch`` loop that serves the latest result as Prometheus metrics
(``exporter``).

Exit statuses: 0 consistent, 1 divergent, 2 could not tell.
"""

from __future__ import annotations

from raftkv.inspect.verdict import (
    EXIT_CONSISTENT,
    EXIT_DIVERGENT,
    EXIT_UNKNOWN,
    CheckResult,
    MemberReport,
)

__all__ = [
    "EXIT_CONSISTENT",
    "EXIT_DIVERGENT",
    "EXIT_UNKNOWN",
    "CheckResult",
    "MemberReport",
]
