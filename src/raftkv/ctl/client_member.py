"""Membership changes and downgrades: ``member add|remove|update|promote`` and
``downgrade validate|enable|cancel``.

Owns: etcdctl's argument checks for these commands (with its messages and exit 128), clientv3's
client-side check of peer URLs before MemberAdd and MemberUpdate (``types.NewURLs`` over Go's
``url.Parse``: same messages), the ``ETCD_*`` block ``member add`` prints for the new member,
and the printers of these responses.

Output, as etcdctl 3.4 prints it (3.6 for ``downgrade``, which 3.4 lacks):
- ``simple``: ``Member %16x added to cluster %16x`` (then a blank line and ``ETCD_NAME``,
  ``ETCD_INITIAL_CLUSTER``, ``ETCD_INITIAL_ADVERTISE_PEER_URLS``,
  ``ETCD_INITIAL_CLUSTER_STATE="existing"``), ``... removed from cluster``, ``... updated in
  cluster``, ``... promoted in cluster``; ``Downgrade validate|enable|cancel success, cluster
  version X``;
- ``json`` and ``protobuf``: the response itself;
- ``table`` and ``fields``: ``X not supported as output format``, exit 4, after the request was
  made (as etcdctl: the change has taken effect).
One deliberate difference: etcdctl 3.4 crashes (nil pointer, exit 2) printing ``member promote``
in any format but ``simple``, after promoting; raftkv prints it as etcdctl 3.6 does.
"""

from __future__ import annotations

import argparse
from typing import Any

from raftkv.client import output as fmt
from raftkv.client.conn import (
    EXIT_BAD_ARGS,
    CtlError,
    GlobalOptions,
    call,
    connect,
)
from raftkv.ctl.client_maint import parse_hex_uint, print_rpc, unsupported_format

# ------------------------------------------------------------------------------- arguments


def _member_id(args: list[str]) -> int:
    """etcdctl's member ID argument: exactly one, hexadecimal (``strconv.ParseUint(s, 16, 64)``)."""
    if len(args) != 1:
        raise CtlError("member ID is not provided", EXIT_BAD_ARGS)
    try:
        return parse_hex_uint(args[0])
    except ValueError as exc:
        raise CtlError(f"bad member ID arg ({exc}), expecting ID in Hex", EXIT_BAD_ARGS) from None


def _peer_urls(text: str) -> list[str]:
    if not text:
        raise CtlError("member peer urls not provided", EXIT_BAD_ARGS)
    return text.split(",")


_CTL_BYTES = {*range(0x20), 0x7F}
# Characters url.Parse accepts in a host besides letters and digits (Go's shouldEscape with
# encodeHost); bytes >= 0x80 are accepted too.
_HOST_OK = set("-_.~!$&'()*+,;=:[]<>\"%")


def _url_error(text: str) -> str | None:
    """clientv3's ``types.NewURLs`` check of one peer URL: None when etcdctl accepts it, else
    its message (Go's ``url.Parse`` errors included for the usual mistakes)."""
    text = text.strip(" \t\n\r\v\f")
    raw = text.split("#", 1)[0]
    if any(b in _CTL_BYTES for b in raw.encode()):
        return f"parse {fmt.go_quote(raw)}: net/url: invalid control character in URL"
    scheme, rest = _go_scheme(raw)
    if scheme is None:
        return f"parse {fmt.go_quote(raw)}: missing protocol scheme"
    rest = rest.split("?", 1)[0]
    host, path = "", rest
    if not rest.startswith("/"):
        if not scheme and ":" in rest.split("/", 1)[0]:
            return f"parse {fmt.go_quote(raw)}: first path segment in URL cannot contain colon"
        path = "" if scheme else rest  # an opaque URL (``http:x``) has no host and no path
    elif rest.startswith("//"):
        authority, slash, tail = rest[2:].partition("/")
        path = slash + tail
        host = authority.rsplit("@", 1)[-1]
        problem = _go_host_error(host)
        if problem is not None:
            return f"parse {fmt.go_quote(raw)}: {problem}"
    if scheme.lower() not in ("http", "https", "unix", "unixs"):
        return f"URL scheme must be http, https, unix, or unixs: {text}"
    if not _splits_host_port(host):
        return f'URL address does not have the form "host:port": {text}'
    if path:
        return f"URL must not contain a path: {text}"
    return None


def _go_scheme(raw: str) -> tuple[str | None, str]:
    """Go's ``getScheme``: (scheme or "" when there is none, the rest); (None, "") for a URL
    starting with ``:`` (``missing protocol scheme``)."""
    for i, ch in enumerate(raw):
        if ch.isascii() and ch.isalpha():
            continue
        if ch.isascii() and (ch.isdigit() or ch in "+-."):
            if i == 0:
                return "", raw
            continue
        if ch == ":":
            return (None, "") if i == 0 else (raw[:i], raw[i + 1 :])
        return "", raw
    return "", raw


def _go_host_error(host: str) -> str | None:
    """Go's ``parseHost``: the port after the host must be digits; no character a host name
    may not hold."""
    if host.startswith("["):
        end = host.rfind("]")
        if end < 0:
            return "missing ']' in host"
        port = host[end + 1 :]
    else:
        colon = host.rfind(":")
        port = host[colon:] if colon >= 0 else ""
    if port and (port[0] != ":" or not all(c.isdigit() and c.isascii() for c in port[1:])):
        return f"invalid port {fmt.go_quote(port)} after host"
    for ch in host:
        if ch.isascii() and not ch.isalnum() and ch not in _HOST_OK:
            return f"invalid character {fmt.go_quote(ch)} in host name"
    return None


def _splits_host_port(hostport: str) -> bool:
    """Whether Go's ``net.SplitHostPort`` accepts ``hostport``."""
    colon = hostport.rfind(":")
    if colon < 0:
        return False
    start, close = 0, 0
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0 or end + 1 != colon:
            return False
        start, close = 1, end + 1
    elif ":" in hostport[:colon]:
        return False
    return "[" not in hostport[start:] and "]" not in hostport[close:]


def check_peer_urls(urls: list[str]) -> None:
    """clientv3's fail-fast check before MemberAdd and MemberUpdate (exit 1, as etcdctl)."""
    for url in urls:
        problem = _url_error(url)
        if problem is not None:
            raise CtlError(problem)


# ------------------------------------------------------------------------------- member


def _render_change(resp: Any, opts: GlobalOptions, out: fmt.Out, line: str) -> None:
    """A membership change's answer: ``line`` in ``simple``, the response in json/protobuf."""
    if print_rpc(resp, opts, out):
        return
    unsupported_format(opts, "table", "fields")
    out.line(line)


def initial_cluster_block(resp: Any, name: str, peer_urls_flag: str) -> list[str]:
    """The lines etcdctl prints after ``member add`` in ``simple`` (its own composition: every
    member's peer URLs as ``name=url``, the new member named as given, unstarted ones with an
    empty name; the advertise URLs as the flag was written)."""
    new_id = resp.member.ID
    conf = []
    for m in resp.members:
        shown = name if new_id == m.ID else m.name
        conf += [f"{shown}={url}" for url in m.peerURLs]
    return [
        "",
        f"ETCD_NAME={fmt.go_quote(name)}",
        f"ETCD_INITIAL_CLUSTER={fmt.go_quote(','.join(conf))}",
        f"ETCD_INITIAL_ADVERTISE_PEER_URLS={fmt.go_quote(peer_urls_flag)}",
        'ETCD_INITIAL_CLUSTER_STATE="existing"',
    ]


def cmd_member_add(args: argparse.Namespace, opts: GlobalOptions, out: fmt.Out) -> int:
    from raftkv.proto import rpc_pb2

    names: list[str] = list(args.args)
    if not names:
        raise CtlError("member name not provided", EXIT_BAD_ARGS)
    if len(names) > 1:
        text = "too many arguments"
        for s in names:
            if s.lower().startswith("http"):
                text += f", did you mean --peer-urls={s}"
        raise CtlError(text, EXIT_BAD_ARGS)
    urls = _peer_urls(args.peer_urls)
    stubs = connect(opts)
    try:
        check_peer_urls(urls)
        req = rpc_pb2.MemberAddRequest(peerURLs=urls, isLearner=args.learner)
        resp = call(stubs.cluster.MemberAdd, req, opts)
    finally:
        stubs.close()
    _render_change(
        resp,
        opts,
        out,
        f"Member {resp.member.ID:16x} added to cluster {resp.header.cluster_id:16x}",
    )
    if opts.write_out == "simple":
        out.line("\n".join(initial_cluster_block(resp, names[0], args.peer_urls)))
    return 0


def cmd_member_remove(args: argparse.Namespace, opts: GlobalOptions, out: fmt.Out) -> int:
    from raftkv.proto import rpc_pb2

    member_id = _member_id(list(args.args))
    stubs = connect(opts)
    try:
        resp = call(stubs.cluster.MemberRemove, rpc_pb2.MemberRemoveRequest(ID=member_id), opts)
    finally:
        stubs.close()
    cluster = resp.header.cluster_id
    _render_change(resp, opts, out, f"Member {member_id:16x} removed from cluster {cluster:16x}")
    return 0


def cmd_member_update(args: argparse.Namespace, opts: GlobalOptions, out: fmt.Out) -> int:
    from raftkv.proto import rpc_pb2

    member_id = _member_id(list(args.args))
    urls = _peer_urls(args.peer_urls)
    stubs = connect(opts)
    try:
        check_peer_urls(urls)
        req = rpc_pb2.MemberUpdateRequest(ID=member_id, peerURLs=urls)
        resp = call(stubs.cluster.MemberUpdate, req, opts)
    finally:
        stubs.close()
    cluster = resp.header.cluster_id
    _render_change(resp, opts, out, f"Member {member_id:16x} updated in cluster {cluster:16x}")
    return 0


def cmd_member_promote(args: argparse.Namespace, opts: GlobalOptions, out: fmt.Out) -> int:
    from raftkv.proto import rpc_pb2

    member_id = _member_id(list(args.args))
    stubs = connect(opts)
    try:
        req = rpc_pb2.MemberPromoteRequest(ID=member_id)
        resp = call(stubs.cluster.MemberPromote, req, opts)
    finally:
        stubs.close()
    cluster = resp.header.cluster_id
    _render_change(resp, opts, out, f"Member {member_id:16x} promoted in cluster {cluster:16x}")
    return 0


# ------------------------------------------------------------------------------- downgrade


def _target_version(args: list[str]) -> str:
    if not args:
        raise CtlError("TARGET_VERSION not provided", EXIT_BAD_ARGS)
    if len(args) > 1:
        raise CtlError("too many arguments", EXIT_BAD_ARGS)
    if not args[0]:
        raise CtlError("target version not provided", EXIT_BAD_ARGS)
    return args[0]


def _downgrade(opts: GlobalOptions, out: fmt.Out, action: str, version: str) -> int:
    """One Maintenance.Downgrade call, printed as etcdctl 3.6 prints it."""
    from raftkv.proto import rpc_pb2

    req = rpc_pb2.DowngradeRequest(
        action=rpc_pb2.DowngradeRequest.DowngradeAction.Value(action.upper()), version=version
    )
    stubs = connect(opts)
    try:
        resp = call(stubs.maintenance.Downgrade, req, opts)
    finally:
        stubs.close()
    if print_rpc(resp, opts, out):
        return 0
    unsupported_format(opts, "table", "fields")
    out.line(f"Downgrade {action} success, cluster version {resp.version}")
    return 0


def cmd_downgrade_validate(args: argparse.Namespace, opts: GlobalOptions, out: fmt.Out) -> int:
    return _downgrade(opts, out, "validate", _target_version(list(args.args)))


def cmd_downgrade_enable(args: argparse.Namespace, opts: GlobalOptions, out: fmt.Out) -> int:
    return _downgrade(opts, out, "enable", _target_version(list(args.args)))


def cmd_downgrade_cancel(args: argparse.Namespace, opts: GlobalOptions, out: fmt.Out) -> int:
    return _downgrade(opts, out, "cancel", "")
