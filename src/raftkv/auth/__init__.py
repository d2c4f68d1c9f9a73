"""etcd's authentication and authorization, as a pure core: users, roles and key-range
permissions kept in the replicated backend, password hashing, and member-local tokens.

Modules: ``permissions`` (the key-range rules), ``passwords`` (bcrypt), ``store`` (the
replicated state, its apply-time rules and the permission checks), ``tokens`` (``--auth-token``:
simple and JWT tokens).  Nothing here reads a clock or randomness on the apply path.
"""

from __future__ import annotations

from raftkv.auth.permissions import Grant, PermType, RangePermissions, is_permitted
from raftkv.auth.store import ROOT_ROLE, ROOT_USER, AuthStatus, AuthStore, needs_admin_permission
from raftkv.auth.tokens import (
    AuthInfo,
    AuthTokenError,
    JwtTokenProvider,
    NopTokenProvider,
    SimpleTokenProvider,
    TokenAssignError,
    TokenProvider,
    new_token_provider,
)

__all__ = [
    "ROOT_ROLE",
    "ROOT_USER",
    "AuthInfo",
    "AuthStatus",
    "AuthStore",
    "AuthTokenError",
    "Grant",
    "JwtTokenProvider",
    "NopTokenProvider",
    "PermType",
    "RangePermissions",
    "SimpleTokenProvider",
    "TokenAssignError",
    "TokenProvider",
    "is_permitted",
    "needs_admin_permission",
    "new_token_provider",
]
