"""Private files and directories, as etcd keeps them (``client/pkg/fileutil``).

Owns: the modes of everything a member (and the tools building a member's data, saving
snapshots or keeping backups) creates on disk, and etcd's check of an existing data directory.
A leaf: imports nothing of raftkv, so every layer may use it.

Contracts:
- files are created ``PRIVATE_FILE_MODE`` (0600) and directories ``PRIVATE_DIR_MODE`` (0700),
  each at its creation point with an explicit mode; the process umask is never changed (it
  can only narrow these modes);
- ``mkdir_all`` is Go's ``os.MkdirAll(dir, 0700)``: every directory it creates, the missing
  parents included, is 0700 (Python's ``os.makedirs`` gives its mode to the leaf only);
- ``touch_dir_all`` is etcd's ``TouchDirAll``: an existing directory whose permission is not
  0700 is left as it is and logged with etcd's warning (``check_dir_permission``'s text); a
  missing one is created; either way the directory must be writable (a ``.touch`` file is
  created and removed), else ``OSError``;
- existing files and directories are never chmod-ed.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat

PRIVATE_FILE_MODE = 0o600
"""Owner may read and write (etcd's ``fileutil.PrivateFileMode``)."""

PRIVATE_DIR_MODE = 0o700
"""Owner may list, create and remove entries (etcd's ``fileutil.PrivateDirMode``)."""


def mkdir_all(path: str) -> None:
    """Create ``path`` and its missing parents, each ``PRIVATE_DIR_MODE``; nothing when it is
    already a directory.  ``OSError`` when a component is not a directory or cannot be made."""
    path = os.path.normpath(os.path.abspath(path))
    parent = os.path.dirname(path)
    if parent != path and not os.path.exists(parent):
        mkdir_all(parent)  # a parent that is a file: ENOTDIR from the mkdir below
    try:
        os.mkdir(path, PRIVATE_DIR_MODE)
    except FileExistsError:
        if not os.path.isdir(path):
            raise


def touch_dir_all(path: str, log: logging.Logger) -> None:
    """etcd's ``TouchDirAll``: warn about an existing directory that is not private, create a
    missing one (``mkdir_all``), then make sure it is writable; ``OSError`` otherwise."""
    if os.path.exists(path):
        problem = check_dir_permission(path, PRIVATE_DIR_MODE)
        if problem is not None:
            log.warning("check file permission: %s", problem)
    else:
        mkdir_all(path)
    is_dir_writeable(path)


def is_dir_writeable(path: str) -> None:
    """etcd's ``IsDirWriteable``: create and remove ``path/.touch``; ``OSError`` if it fails."""
    touch = os.path.join(os.path.abspath(path), ".touch")
    os.close(os.open(touch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE_MODE))
    os.remove(touch)


def check_dir_permission(path: str, perm: int = PRIVATE_DIR_MODE) -> str | None:
    """etcd's ``CheckDirPermission``: None when the permission bits of ``path`` are ``perm``,
    else etcd's error text (which names the recommended ``PRIVATE_DIR_MODE``)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return f"directory {go_quote(path)} empty, cannot check permission"
    if st.st_mode & 0o777 == perm:
        return None
    return (
        f"directory {go_quote(path)} exist, but the permission is "
        f"{go_quote(go_file_mode(st.st_mode))}. The recommended permission is "
        f"{go_quote(go_file_mode(PRIVATE_DIR_MODE))} to prevent possible unprivileged access "
        "to the data"
    )


def copy_file(src: str, dst: str, *, sync: bool = False) -> None:
    """Copy the bytes of ``src`` to ``dst``, created (or truncated) ``PRIVATE_FILE_MODE``.
    ``sync``: ``dst`` is fsynced before it is closed (its directory entry is the caller's);
    otherwise the caller owns durability."""
    with open(src, "rb") as fin:
        fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE_MODE)
        with os.fdopen(fd, "wb") as fout:
            shutil.copyfileobj(fin, fout, 1 << 20)
            if sync:
                fout.flush()
                os.fsync(fout.fileno())


def go_file_mode(mode: int) -> str:
    """What Go prints for the ``os.FileMode`` of a stat ``st_mode`` (``drwxr-xr-x``; a plain
    permission such as 0o700 prints ``-rwx------``)."""
    # Go's FileMode.String: one letter per type or special bit set, in Go's order, then rwx.
    kind = stat.S_IFMT(mode)
    letters = "".join(
        letter
        for letter, present in (
            ("d", kind == stat.S_IFDIR),
            ("L", kind == stat.S_IFLNK),
            ("D", kind in (stat.S_IFBLK, stat.S_IFCHR)),
            ("p", kind == stat.S_IFIFO),
            ("S", kind == stat.S_IFSOCK),
            ("u", bool(mode & stat.S_ISUID)),
            ("g", bool(mode & stat.S_ISGID)),
            ("c", kind == stat.S_IFCHR),
            ("t", bool(mode & stat.S_ISVTX)),
        )
        if present
    )
    perm = "".join(c if mode & (1 << (8 - i)) else "-" for i, c in enumerate("rwxrwxrwx"))
    return (letters or "-") + perm


def go_quote(text: str) -> str:
    """Go's ``%q`` of a string (double quotes, backslash escapes)."""
    return json.dumps(text, ensure_ascii=False)
