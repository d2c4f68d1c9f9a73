"""Byte-exact renderings of etcdctl 3.4's output building blocks.

Owns: Go's ``encoding/json`` view of gogoproto messages (snake-case tags, omitempty, base64 bytes,
int64 as numbers, oneofs as ``{"Response":{"ResponsePut":...}}``), Go's ``%q`` quoting, the
``fields`` key/value lines, the ``--hex`` key/value form, ``olekukonko/tablewriter`` tables,
``go-humanize`` byte sizes and ``time.Duration`` strings.  Everything returns or writes bytes; the
command modules decide what to print.
"""

from __future__ import annotations

import base64
import json
import math
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

# Fields raftkv's proto carries that etcd 3.4 does not know; etcdctl 3.4 never prints them.
_NOT_IN_34 = {
    ("HashKVResponse", "hash_revision"),
    ("StatusResponse", "storageVersion"),
    ("StatusResponse", "dbSizeQuota"),
    ("StatusResponse", "downgradeInfo"),
}


class Out:
    """Buffered byte output on stdout (and stderr), flushed after each command or watch event."""

    def __init__(self) -> None:
        self.stdout = sys.stdout.buffer
        self.stderr = sys.stderr.buffer

    def write(self, data: bytes) -> None:
        self.stdout.write(data)

    def line(self, data: bytes | str = b"") -> None:
        self.stdout.write((data.encode() if isinstance(data, str) else data) + b"\n")

    def err_line(self, data: str) -> None:
        self.stderr.write(data.encode() + b"\n")

    def flush(self) -> None:
        self.stdout.flush()
        self.stderr.flush()


# ------------------------------------------------------------------------------------ Go JSON


def _go_name(snake: str) -> str:
    """gogoproto's Go field name for a proto field name (``response_put`` → ``ResponsePut``)."""
    return "".join(part[:1].upper() + part[1:] for part in snake.split("_"))


def _scalar_is_zero(value: Any) -> bool:
    return value in (0, False, "", b"")


def go_json_obj(msg: Message) -> dict[str, Any]:
    """The dict Go's json.Marshal produces for a gogoproto struct (all fields omitempty)."""
    out: dict[str, Any] = {}
    desc = msg.DESCRIPTOR
    done_oneofs: set[str] = set()
    for field in desc.fields:
        if (desc.name, field.name) in _NOT_IN_34:
            continue
        oneof = field.containing_oneof
        if oneof is not None and not getattr(oneof, "is_synthetic", False):
            if oneof.name in done_oneofs:
                continue
            done_oneofs.add(oneof.name)
            which = msg.WhichOneof(oneof.name)
            if which is None:
                continue
            inner = getattr(msg, which)
            chosen = desc.fields_by_name[which]
            value = go_json_obj(inner) if chosen.message_type is not None else inner
            out[_go_name(oneof.name)] = {_go_name(which): value}
            continue
        value = getattr(msg, field.name)
        if _is_repeated(field):
            if len(value) == 0:
                continue
            out[field.name] = [_go_json_single(field, v) for v in value]
        elif field.message_type is not None:
            if msg.HasField(field.name):
                out[field.name] = go_json_obj(value)
        elif not _scalar_is_zero(value):
            out[field.name] = _go_json_single(field, value)
    return out


def _is_repeated(field: Any) -> bool:
    rep = getattr(field, "is_repeated", None)
    if rep is not None:
        return bool(rep)
    return bool(field.label == FieldDescriptor.LABEL_REPEATED)


def _go_json_single(field: Any, value: Any) -> Any:
    if field.message_type is not None:
        return go_json_obj(value)
    if field.type == FieldDescriptor.TYPE_BYTES:
        return b64(value)
    return value


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def header_obj(msg: Message) -> dict[str, Any]:
    """A response header's JSON fields, for clientv3 types that embed ``*pb.ResponseHeader``."""
    header = getattr(msg, "header", None)
    if header is None or not msg.HasField("header"):
        return {}
    return go_json_obj(header)


def go_json_dumps(value: Any) -> bytes:
    """Go's json.Marshal text: compact, HTML characters and U+2028/9 escaped, UTF-8 kept."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    for raw, esc in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(raw, esc)
    return text.encode("utf-8", errors="surrogateescape")


# ------------------------------------------------------------------------- Go text helpers


def go_quote(data: bytes | str) -> str:
    """Go's ``strconv.Quote`` (the ``%q`` verb) for a byte string."""
    if isinstance(data, str):
        data = data.encode("utf-8", errors="surrogateescape")
    out = ['"']
    i = 0
    while i < len(data):
        ch, size = _decode_rune(data, i)
        if ch is None:
            out.append(f"\\x{data[i]:02x}")
            i += 1
            continue
        i += size
        out.append(_quote_rune(ch))
    out.append('"')
    return "".join(out)


_SPECIAL = {
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
    "\\": "\\\\",
    '"': '\\"',
}


def _quote_rune(ch: str) -> str:
    if ch in _SPECIAL:
        return _SPECIAL[ch]
    code = ord(ch)
    if ch.isprintable() or ch == " ":
        return ch
    if code < 0x80:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def _decode_rune(data: bytes, i: int) -> tuple[str | None, int]:
    first = data[i]
    if first < 0x80:
        return chr(first), 1
    size = (
        2
        if first >> 5 == 0b110
        else 3
        if first >> 4 == 0b1110
        else 4
        if first >> 3 == 0b11110
        else 0
    )
    if size == 0:
        return None, 1
    try:
        return data[i : i + size].decode("utf-8"), size
    except UnicodeDecodeError:
        return None, 1


def hex_with_prefix(data: bytes) -> bytes:
    """etcdctl's ``--hex`` form: every byte as ``\\xNN``."""
    return "".join(f"\\x{b:02x}" for b in data).encode("ascii")


def kv_lines(kv: Any, is_hex: bool, value_only: bool) -> list[bytes]:
    """The simple printer's lines for one key-value: key (unless value-only) then value."""
    key, value = bytes(kv.key), bytes(kv.value)
    if is_hex:
        key, value = hex_with_prefix(key), hex_with_prefix(value)
    return [value] if value_only else [key, value]


def fields_header(h: Any) -> list[str]:
    return [
        f'"ClusterID" : {h.cluster_id}',
        f'"MemberID" : {h.member_id}',
        f'"Revision" : {h.revision}',
        f'"RaftTerm" : {h.raft_term}',
    ]


def fields_kv(prefix: str, kv: Any) -> list[str]:
    return [
        f'"{prefix}Key" : {go_quote(bytes(kv.key))}',
        f'"{prefix}CreateRevision" : {kv.create_revision}',
        f'"{prefix}ModRevision" : {kv.mod_revision}',
        f'"{prefix}Version" : {kv.version}',
        f'"{prefix}Value" : {go_quote(bytes(kv.value))}',
        f'"{prefix}Lease" : {kv.lease}',
    ]


def go_bool(value: bool) -> str:
    return "true" if value else "false"


def go_string_list(items: Iterable[str]) -> str:
    """Go's ``%v`` of a []string: ``[a b c]``."""
    return "[" + " ".join(items) + "]"


# --------------------------------------------------------------------------- tables & units


def render_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """tablewriter with etcdctl's settings: upper-case centred header, right-aligned cells."""
    titles = [h.upper() for h in header]
    widths = [len(t) for t in titles]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    sep = "+" + "+".join("-" * (w + 2) for w in widths) + "+"

    def centre(text: str, width: int) -> str:
        gap = width - len(text)
        left = gap // 2
        return " " * left + text + " " * (gap - left)

    lines = [
        sep,
        "|" + "|".join(f" {centre(t, w)} " for t, w in zip(titles, widths, strict=True)) + "|",
        sep,
    ]
    for row in rows:
        lines.append(
            "|" + "|".join(f" {c.rjust(w)} " for c, w in zip(row, widths, strict=True)) + "|"
        )
    lines.append(sep)
    return lines


def humanize_bytes(size: int) -> str:
    """go-humanize ``Bytes``: SI units, one decimal below 10."""
    if size < 10:
        return f"{size} B"
    sizes = ["B", "kB", "MB", "GB", "TB", "PB", "EB"]
    exp = math.floor(math.log(size) / math.log(1000))
    val = math.floor(size / (1000**exp) * 10 + 0.5) / 10
    fmt = "{:.1f} {}" if val < 10 else "{:.0f} {}"
    return fmt.format(val, sizes[exp])


def go_duration(seconds: float) -> str:
    """Go's ``time.Duration.String`` for a non-negative duration."""
    ns = round(seconds * 1e9)
    if ns == 0:
        return "0s"
    if ns < 1000:
        return f"{ns}ns"
    if ns < 1_000_000:
        return _trim(f"{ns / 1000:.3f}") + "µs"
    if ns < 1_000_000_000:
        return _trim(f"{ns / 1_000_000:.6f}") + "ms"
    total_s, frac = divmod(ns, 1_000_000_000)
    hours, rem = divmod(total_s, 3600)
    minutes, secs = divmod(rem, 60)
    sec_text = _trim(f"{secs}.{frac:09d}")
    if hours:
        return f"{hours}h{minutes}m{sec_text}s"
    if minutes:
        return f"{minutes}m{sec_text}s"
    return f"{sec_text}s"


def _trim(text: str) -> str:
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def proto_text_compact(msg: Message) -> str:
    """gogoproto's ``CompactTextString`` as ``%+v`` prints it (``memberID:1 alarm:NOSPACE ``)."""
    parts: list[str] = []
    for field in msg.DESCRIPTOR.fields:
        value = getattr(msg, field.name)
        if _is_repeated(field) or field.message_type is not None:
            continue
        if _scalar_is_zero(value):
            continue
        if field.enum_type is not None:
            text = field.enum_type.values_by_number[value].name
        elif isinstance(value, (bytes, str)):
            text = go_quote(value)
        elif isinstance(value, bool):
            text = go_bool(value)
        else:
            text = str(value)
        parts.append(f"{field.name}:{text} ")
    return "".join(parts)
