"""The ``txn`` command: etcdctl's transaction grammar read from standard input.

Owns: the three blank-line-terminated sections (compares, success ops, failure ops), the
interactive prompts of ``-i``, parsing of compare lines (``value("k") = "v"``, ``mod("k") > "3"``,
``create``, ``version``, ``lease`` and their short forms) with Go's ``%q`` scanning, and parsing of
``put``/``get``/``del`` lines with the same flags as the top-level commands.  Error texts and exit
codes are etcdctl 3.4's.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from typing import IO, Any, NoReturn

from raftkv.client import output as fmt
from raftkv.client.conn import (
    EXIT_BAD_ARGS,
    EXIT_INVALID_INPUT,
    CtlError,
    GlobalOptions,
    call,
    connect,
    parse_go_int,
)
from raftkv.ctl import client_flags, client_kv

_ARG_RE = re.compile(r""""(?:[^"\\]|\\.)*"|'[^']*'|[^'"\s]\S*[^'"\s]?""")
_SIMPLE_ESCAPES = {
    "a": b"\a",
    "b": b"\b",
    "f": b"\f",
    "n": b"\n",
    "r": b"\r",
    "t": b"\t",
    "v": b"\v",
    "\\": b"\\",
    '"': b'"',
    "'": b"'",
}
_COMPARE_RESULTS = {"=": 0, "==": 0, ">": 1, "<": 2, "!=": 3}
_TARGETS = {
    "ver": ("version", 0),
    "version": ("version", 0),
    "c": ("create_revision", 1),
    "create": ("create_revision", 1),
    "m": ("mod_revision", 2),
    "mod": ("mod_revision", 2),
    "val": ("value", 3),
    "value": ("value", 3),
    "lease": ("lease", 4),
}


class _ScanError(Exception):
    pass


def go_unquote_prefix(text: str) -> tuple[bytes, str]:
    """Scan one Go double-quoted (or back-quoted) literal at the start of ``text``.

    Returns the decoded bytes and the rest of the text; raises _ScanError when there is none.
    """
    if text.startswith("`"):
        end = text.find("`", 1)
        if end < 0:
            raise _ScanError(text)
        return text[1:end].encode(), text[end + 1 :]
    if not text.startswith('"'):
        raise _ScanError(text)
    out = bytearray()
    i = 1
    while i < len(text):
        ch = text[i]
        if ch == '"':
            return bytes(out), text[i + 1 :]
        if ch != "\\":
            out += ch.encode("utf-8", errors="surrogateescape")
            i += 1
            continue
        i += 1
        if i >= len(text):
            break
        esc = text[i]
        if esc in _SIMPLE_ESCAPES:
            out += _SIMPLE_ESCAPES[esc]
            i += 1
        elif esc == "x" and re.fullmatch(r"[0-9a-fA-F]{2}", text[i + 1 : i + 3]):
            out.append(int(text[i + 1 : i + 3], 16))
            i += 3
        elif esc in "uU":
            n = 4 if esc == "u" else 8
            digits = text[i + 1 : i + 1 + n]
            if not re.fullmatch(f"[0-9a-fA-F]{{{n}}}", digits):
                raise _ScanError(text)
            out += chr(int(digits, 16)).encode()
            i += 1 + n
        elif re.fullmatch(r"[0-7]{3}", text[i : i + 3]):
            out.append(int(text[i : i + 3], 8) & 0xFF)
            i += 3
        else:
            raise _ScanError(text)
    raise _ScanError(text)


def argify(line: str) -> list[str]:
    """etcdctl's Argify: split on whitespace, honouring "double" (Go escapes) and 'single' quotes."""
    args = []
    for tok in _ARG_RE.findall(line):
        if tok.startswith("'"):
            tok = tok[1:-1]
        elif tok.startswith('"'):
            try:
                raw, _ = go_unquote_prefix(tok)
            except _ScanError:
                raise CtlError("unexpected EOF", EXIT_INVALID_INPUT) from None
            tok = raw.decode("utf-8", errors="surrogateescape")
        args.append(tok)
    return args


def parse_compare(line: str) -> Any:
    """One compare line → ``etcdserverpb.Compare``; errors carry etcdctl's message."""
    from raftkv.proto import rpc_pb2

    target, paren, rest = line.partition("(")
    if not paren:
        raise CtlError(f"malformed comparison: {line}", EXIT_INVALID_INPUT)
    key, op, val, n = b"", "", b"", 0
    try:
        key, rest = go_unquote_prefix(rest)
        n = 1
        if not rest.startswith(")"):
            raise _ScanError(rest)
        rest = rest[1:].lstrip(" ")
        m = re.match(r"\S+", rest)
        if m is None:
            raise _ScanError(rest)
        op, rest = m.group(0), rest[m.end() :].lstrip(" ")
        n = 2
        val, rest = go_unquote_prefix(rest)
        n = 3
    except _ScanError:
        pass
    if n != 3:
        got = f"{target}({fmt.go_quote(key)}) {op} {fmt.go_quote(val)}"
        raise CtlError(f"malformed comparison: {line}; got {got}", EXIT_INVALID_INPUT)
    if target not in _TARGETS:
        raise CtlError(
            f"malformed comparison: {line} (unknown target {target})", EXIT_INVALID_INPUT
        )
    if op not in _COMPARE_RESULTS:
        raise CtlError(f"malformed comparison: {line} (unknown op {op})", EXIT_INVALID_INPUT)
    field, target_num = _TARGETS[target]
    cmp: Any = rpc_pb2.Compare(key=key)
    cmp.result, cmp.target = _COMPARE_RESULTS[op], target_num
    text = val.decode("utf-8", errors="surrogateescape")
    try:
        if field == "value":
            cmp.value = val
        elif field == "lease":
            if not re.fullmatch(r"[+-]?[0-9a-fA-F]+", text):
                raise ValueError(text)
            setattr(cmp, field, int(text, 16))
        else:
            setattr(cmp, field, parse_go_int(text))
    except (ValueError, OverflowError):
        raise CtlError(f"invalid txn compare request: {line}", EXIT_INVALID_INPUT) from None
    return cmp


class _OpParseError(Exception):
    pass


class _RaisingParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _OpParseError(message)


def _op_parsers() -> dict[str, argparse.ArgumentParser]:
    parsers: dict[str, argparse.ArgumentParser] = {}
    for name, adder in (
        ("put", client_flags.add_put_flags),
        ("get", client_flags.add_get_flags),
        ("del", client_flags.add_del_flags),
    ):
        p = _RaisingParser(prog=name, add_help=False, allow_abbrev=False)
        adder(p)
        parsers[name] = p
    return parsers


def parse_request_op(line: str, parsers: dict[str, argparse.ArgumentParser]) -> Any:
    """One ``put``/``get``/``del`` line → ``etcdserverpb.RequestOp``."""
    from raftkv.proto import rpc_pb2

    args = argify(line)
    if len(args) < 2:
        raise CtlError(f"invalid txn compare request: {line}", EXIT_INVALID_INPUT)
    parser = parsers.get(args[0])
    if parser is None:
        raise CtlError(f"invalid txn request: {line}", EXIT_INVALID_INPUT)
    try:
        ns = parser.parse_args(args[1:])
    except _OpParseError:
        raise CtlError(f"invalid txn request: {line}", EXIT_INVALID_INPUT) from None
    if args[0] == "put":
        return rpc_pb2.RequestOp(request_put=client_kv.build_put(ns, stdin_ok=False))
    if args[0] == "get":
        if ns.count_only:
            raise CtlError(f"invalid txn request: {line}", EXIT_INVALID_INPUT)
        return rpc_pb2.RequestOp(request_range=client_kv.build_range(ns))
    return rpc_pb2.RequestOp(request_delete_range=client_kv.build_delete(ns))


def _read_section(stream: IO[bytes], parse: Callable[[str], Any]) -> list[Any]:
    items: list[Any] = []
    while True:
        raw = stream.readline()
        if not raw.endswith(b"\n"):
            raise CtlError("EOF", EXIT_INVALID_INPUT)
        line = raw.decode("utf-8", errors="surrogateescape").strip()
        if not line:
            return items
        items.append(parse(line))


def read_txn(stream: IO[bytes], interactive: bool, out: fmt.Out) -> Any:
    """Read compares, success ops and failure ops from ``stream`` into a TxnRequest."""
    from raftkv.proto import rpc_pb2

    parsers = _op_parsers()

    def prompt(text: str) -> None:
        if interactive:
            out.line(text)
            out.flush()

    def op(line: str) -> Any:
        return parse_request_op(line, parsers)

    prompt("compares:")
    compares = _read_section(stream, parse_compare)
    prompt("success requests (get, put, del):")
    success = _read_section(stream, op)
    prompt("failure requests (get, put, del):")
    failure = _read_section(stream, op)
    return rpc_pb2.TxnRequest(compare=compares, success=success, failure=failure)


def cmd_txn(args: argparse.Namespace, opts: GlobalOptions, out: fmt.Out) -> int:
    import sys

    if args.args:
        raise CtlError("txn command does not accept argument", EXIT_BAD_ARGS)
    stubs = connect(opts)
    try:
        req = read_txn(sys.stdin.buffer, args.interactive, out)
        client_kv.render_txn(call(stubs.kv.Txn, req, opts), opts, out)
    finally:
        stubs.close()
    return 0
