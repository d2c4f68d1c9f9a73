"""A client command's failure and etcdctl's exit codes, free of gRPC imports.

Owns: :class:`CtlError` (printed as ``Error: <message>`` on stderr; the process exits with its
``code``) and etcdctl's exit codes (``etcdctl/ctlv3/command/error.go`` through ``cobrautl``).
The settings (``raftkv.client.security``) raise it before any channel exists, so it lives apart
from the dialing code; ``raftkv.client.conn`` re-exports both.
"""

from __future__ import annotations

EXIT_SUCCESS = 0
EXIT_ERROR = 1
EXIT_BAD_CONNECTION = 2
EXIT_INVALID_INPUT = 3
EXIT_BAD_FEATURE = 4
EXIT_INTERRUPTED = 5
EXIT_IO = 6
EXIT_BAD_ARGS = 128


class CtlError(Exception):
    """A command failure: printed as ``Error: <message>`` on stderr, process exits with ``code``."""

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
