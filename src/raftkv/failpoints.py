"""Failpoints: the named places where a member can be told to misbehave.

Owns: the registry of every known failpoint (``REGISTRY``, name → one-line description), the
parser of ``RAFTKV_FAILPOINTS`` and the evaluation of a failpoint when code reaches it.

Configuration (gofail's term syntax, restricted to what is deterministic)::

    RAFTKV_FAILPOINTS="name=chain;name2=chain"
    chain  := term ("->" term)*
    term   := [N "*"] action          N >= 1: the term applies to the next N hits only
    action := on | off | panic | sleep(MS) | return(VALUE)

``on`` fires; ``off`` does nothing; ``panic`` kills the process with SIGKILL (exit status -9 as
a parent sees it, the same as an external ``kill -9``: no flush, no atexit, no finally blocks);
``sleep(MS)`` blocks the calling thread for MS milliseconds and does not fire; ``return(V)``
fires with the string value V.  Terms are used in order; a term without a count lasts forever,
a counted term passes to the next one when its count is used up, and a failpoint whose last
term is used up is off.  So ``3*on`` fires on the next three hits only and ``4*off->1*on`` fires
on the fifth hit only.

The environment variable is parsed once, when this module is imported; an unknown name or a
malformed action raises ``FailpointConfigError`` (whose message lists the known names) from that
import.  ``raftkv serve`` should import this module first thing in ``main`` inside a
``try``/``except FailpointConfigError`` and exit with status 2 and the message.  Tests call
``configure(spec)`` / ``configure(None)`` instead.

Hot-path contract (zero cost when unset): call sites read the module attribute, never a copy::

    from raftkv import failpoints
    if failpoints.ENABLED and failpoints.hit("applyCorruptValue"):
        value = corrupt(value)
    if failpoints.ENABLED:
        failpoints.hit("crashAfterBackendCommit")   # panic/sleep act inside hit()

``ENABLED`` is False unless at least one failpoint is configured, so an unset member pays one
global-attribute load and a falsy test per site.  ``hit`` and ``value`` are thread-safe (the
WAL's fsync thread may hit ``walBeforeFsync`` while the loop hits the apply failpoints).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import threading
import time
from dataclasses import dataclass
from typing import NoReturn

ENV_VAR = "RAFTKV_FAILPOINTS"

REGISTRY: dict[str, str] = {
    "applyCorruptValue": "apply: this member stores a changed value for each put it applies",
    "applySkipEntry": "apply: this member skips the effects of the committed entry it is hit on",
    "applyDropLease": "apply: this member forgets a lease it grants (the grant is not kept)",
    "backendBitFlip": "backend: invert the last byte of a key-bucket value after its CRC (one hit a put)",
    "crashBeforeConsistentIndex": "apply: die after a batch's writes, before its consistent index",
    "crashAfterBackendCommit": "apply: die right after the backend commit, before answering",
    "walBeforeFsync": "wal: hit just before the WAL fdatasync (sleep: slow disk, panic: crash)",
    "walTornWrite": "wal: write a batch up to mid last record, fsync, then die (a torn tail)",
    "walNoSpace": "wal: write half a batch, then fail the write with ENOSPC (a full disk)",
}
"""Every failpoint the code knows, with what it does when it fires."""

ENABLED = False
"""True iff at least one failpoint is configured; the hot-path guard (see the module doc)."""

PANIC_STATUS = -signal.SIGKILL
"""The ``returncode`` a ``subprocess`` parent sees for a member killed by a ``panic`` failpoint."""


class FailpointConfigError(ValueError):
    """``RAFTKV_FAILPOINTS`` (or a ``configure`` spec) names an unknown failpoint or is malformed."""


@dataclass(frozen=True, slots=True)
class Term:
    """One term of a chain: ``action`` with its argument, for ``count`` hits (None: forever)."""

    action: str  # "on" | "off" | "panic" | "sleep" | "return"
    arg: str | float | None
    count: int | None

    def __str__(self) -> str:
        prefix = f"{self.count}*" if self.count is not None else ""
        if self.action == "sleep":
            assert isinstance(self.arg, float)
            ms = int(self.arg) if self.arg.is_integer() else self.arg
            return f"{prefix}sleep({ms})"
        if self.action == "return":
            return f"{prefix}return({self.arg})"
        return prefix + self.action


class _Failpoint:
    """The configured chain of one failpoint and where evaluation has got to in it."""

    __slots__ = ("left", "lock", "name", "pos", "terms")

    def __init__(self, name: str, terms: list[Term]) -> None:
        self.name = name
        self.terms = terms
        self.pos = 0
        self.left = terms[0].count
        self.lock = threading.Lock()

    def next_term(self) -> Term | None:
        """The term this hit is evaluated with, consuming one of its count (None: exhausted)."""
        with self.lock:
            if self.pos >= len(self.terms):
                return None
            term = self.terms[self.pos]
            if self.left is not None:
                self.left -= 1
                if self.left <= 0:
                    self.pos += 1
                    if self.pos < len(self.terms):
                        self.left = self.terms[self.pos].count
            return term

    def spec(self) -> str:
        return "->".join(str(t) for t in self.terms)


_points: dict[str, _Failpoint] = {}

_TERM = re.compile(
    r"^(?:(?P<count>\d+)\s*\*\s*)?"
    r"(?:(?P<bare>on|off|panic)|sleep\(\s*(?P<ms>\d+(?:\.\d+)?)\s*\)|return\((?P<ret>[^)]*)\))$"
)


def _known() -> str:
    return ", ".join(sorted(REGISTRY))


def _parse_term(name: str, text: str) -> Term:
    m = _TERM.match(text.strip())
    if m is None:
        raise FailpointConfigError(
            f"failpoint {name}: bad action {text.strip()!r} "
            "(expected [N*]on|off|panic|sleep(MS)|return(VALUE), terms joined by '->')"
        )
    count = int(m["count"]) if m["count"] is not None else None
    if count is not None and count < 1:
        raise FailpointConfigError(f"failpoint {name}: count must be at least 1 in {text!r}")
    if m["bare"] is not None:
        return Term(m["bare"], None, count)
    if m["ms"] is not None:
        return Term("sleep", float(m["ms"]), count)
    return Term("return", m["ret"], count)


def parse(spec: str) -> dict[str, list[Term]]:
    """Parse a ``RAFTKV_FAILPOINTS`` value into name → chain; raises ``FailpointConfigError``.

    Empty items (``"a=on;"``) and surrounding blanks are allowed; a name given twice is an error.
    """
    out: dict[str, list[Term]] = {}
    for item in spec.split(";"):
        if not item.strip():
            continue
        name, sep, chain = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise FailpointConfigError(f"failpoint item {item.strip()!r} is not name=action")
        if name not in REGISTRY:
            raise FailpointConfigError(f"unknown failpoint {name!r}; known failpoints: {_known()}")
        if name in out:
            raise FailpointConfigError(f"failpoint {name} is configured twice")
        out[name] = [_parse_term(name, t) for t in chain.split("->")]
    return out


def configure(spec: str | None) -> None:
    """Replace the whole configuration by ``spec`` (None or blank: no failpoint is active).

    Parses fully before changing anything: a bad spec leaves the configuration as it was.
    Not meant to race with ``hit`` (configure at start-up or between test steps).
    """
    global ENABLED
    parsed = parse(spec) if spec else {}
    _points.clear()
    _points.update({name: _Failpoint(name, terms) for name, terms in parsed.items()})
    ENABLED = bool(_points)


def active() -> dict[str, str]:
    """Configured failpoint → its chain as written, normalised (for logs and ``/debug``)."""
    return {name: fp.spec() for name, fp in sorted(_points.items())}


def value(name: str) -> str | None:
    """Evaluate failpoint ``name`` at a call site: None when it does not fire.

    Fires (returns a string) for ``on`` (``""``) and ``return(V)`` (``V``).  ``panic`` kills the
    process here; ``sleep(MS)`` blocks here, then does not fire; ``off`` does not fire.
    Raises ``KeyError`` for a name missing from ``REGISTRY`` (a typo at a call site).
    """
    fp = _points.get(name)
    if fp is None:
        if name not in REGISTRY:
            raise KeyError(f"failpoint {name!r} is not in the registry")
        return None
    term = fp.next_term()
    if term is None or term.action == "off":
        return None
    if term.action == "on":
        return ""
    if term.action == "return":
        assert isinstance(term.arg, str)
        return term.arg
    if term.action == "sleep":
        assert isinstance(term.arg, float)
        time.sleep(term.arg / 1000.0)
        return None
    _panic(name)


def hit(name: str) -> bool:
    """Evaluate failpoint ``name``; True when it fires (see ``value``)."""
    return value(name) is not None


def _panic(name: str) -> NoReturn:
    """Die as ``kill -9`` would: no buffers flushed, no cleanup run."""
    with contextlib.suppress(OSError):
        os.write(2, f"raftkv: failpoint {name} panic: killing the process\n".encode())
    os.kill(os.getpid(), signal.SIGKILL)
    # SIGKILL to oneself is delivered before os.kill returns on POSIX; this keeps the
    # promise (the process ends, unflushed) should it ever not be.
    os._exit(128 + signal.SIGKILL)


def _load_env() -> None:
    spec = os.environ.get(ENV_VAR)
    if spec:
        try:
            configure(spec)
        except FailpointConfigError as exc:
            raise FailpointConfigError(f"{ENV_VAR}: {exc}") from None


_load_env()
