"""The etcdctl-compatible client commands of ``raftkv``.

Owns: registering ``put get del txn watch lease member endpoint alarm compaction defrag snapshot
move-leader downgrade version`` on the top-level parser, giving every command etcdctl's global flags
(TLS and auth included), and running a handler: failures print ``Error: <message>`` on stderr
and return etcdctl's exit code.
Command logic lives in the ``client_*`` modules, imported only when a command runs.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from typing import Any

from raftkv.client import quiet_grpc_logs

Handler = Callable[[argparse.Namespace, Any, Any], int]


def _runner(module: str, name: str) -> Callable[[argparse.Namespace], int]:
    """A ``func`` for the namespace that imports ``module`` lazily and runs ``name``."""

    def run(args: argparse.Namespace) -> int:
        quiet_grpc_logs()
        from raftkv.client.conn import CtlError, GlobalOptions
        from raftkv.client.output import Out

        out = Out()
        try:
            handler: Handler = getattr(importlib.import_module(module), name)
            return handler(args, GlobalOptions.from_args(args), out)
        except CtlError as exc:
            out.flush()
            out.err_line(f"Error: {exc.message}")
            return exc.code
        finally:
            out.flush()

    return run


def _global_parent() -> argparse.ArgumentParser:
    from raftkv.ctl.client_flags import add_global_flags

    parent = argparse.ArgumentParser(add_help=False)
    add_global_flags(parent)
    return parent


def register(subparsers: Any) -> None:
    from raftkv.ctl import client_flags as client_kv
    from raftkv.ctl.client_flags import add_watch_flags

    parents = [_global_parent()]

    def leaf(sub: Any, name: str, help_text: str, module: str, func: str) -> Any:
        p = sub.add_parser(name, help=help_text, description=help_text, parents=parents)
        p.set_defaults(func=_runner(f"raftkv.ctl.{module}", func))
        return p

    def group(name: str, help_text: str) -> Any:
        p = subparsers.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(func=lambda _args, _p=p: _p.print_help() or 1)
        return p.add_subparsers(dest=f"{name.replace('-', '_')}_command", metavar="COMMAND")

    p = leaf(subparsers, "put", "Puts the given key into the store", "client_kv", "cmd_put")
    client_kv.add_put_flags(p)
    p = leaf(subparsers, "get", "Gets the key or a range of keys", "client_kv", "cmd_get")
    client_kv.add_get_flags(p)
    p = leaf(
        subparsers, "del", "Removes the specified key or range of keys", "client_kv", "cmd_del"
    )
    client_kv.add_del_flags(p)
    p = leaf(
        subparsers,
        "txn",
        "Txn processes all the requests in one transaction",
        "client_txn",
        "cmd_txn",
    )
    p.add_argument("args", nargs="*", help=argparse.SUPPRESS)
    p.add_argument(
        "-i", "--interactive", action="store_true", help="Input transaction in interactive mode"
    )
    p = leaf(
        subparsers,
        "watch",
        "Watches events stream on keys or prefixes",
        "client_watch",
        "cmd_watch",
    )
    add_watch_flags(p)
    p.add_argument("-i", "--interactive", action="store_true", help="Interactive mode")
    p = leaf(
        subparsers,
        "compaction",
        "Compacts the event history in etcd",
        "client_kv",
        "cmd_compaction",
    )
    p.add_argument("revision", nargs="*", metavar="revision")
    p.add_argument(
        "--physical",
        action="store_true",
        help="wait for the compaction to physically remove all old revisions",
    )

    lease = group("lease", "Lease related commands")
    p = leaf(lease, "grant", "Creates leases", "client_lease", "cmd_grant")
    p.add_argument("args", nargs="*", metavar="ttl")
    p = leaf(lease, "revoke", "Revokes leases", "client_lease", "cmd_revoke")
    p.add_argument("args", nargs="*", metavar="leaseID")
    p = leaf(lease, "timetolive", "Get lease information", "client_lease", "cmd_timetolive")
    p.add_argument("args", nargs="*", metavar="leaseID")
    p.add_argument("--keys", action="store_true", help="Get keys attached to this lease")
    p = leaf(lease, "list", "List all active leases", "client_lease", "cmd_list")
    p = leaf(lease, "keep-alive", "Keeps leases alive (renew)", "client_lease", "cmd_keepalive")
    p.add_argument("args", nargs="*", metavar="leaseID")
    p.add_argument(
        "--once",
        action="store_true",
        help="Resets the keep-alive time to its original value and exits immediately",
    )

    member = group("member", "Membership related commands")
    p = leaf(
        member,
        "add",
        "Adds a member into the cluster (prints etcdctl's ETCD_NAME, ETCD_INITIAL_CLUSTER, "
        "ETCD_INITIAL_ADVERTISE_PEER_URLS and ETCD_INITIAL_CLUSTER_STATE lines for starting it: "
        "raftkv serve --name, --initial-cluster, --initial-advertise-peer-urls, "
        "--initial-cluster-state existing)",
        "client_member",
        "cmd_member_add",
    )
    p.add_argument("args", nargs="*", metavar="memberName")
    p.add_argument("--peer-urls", default="", help="comma separated peer URLs for the new member.")
    p.add_argument(
        "--learner", action="store_true", help="indicates if the new member is raft learner"
    )
    p = leaf(
        member, "remove", "Removes a member from the cluster", "client_member", "cmd_member_remove"
    )
    p.add_argument("args", nargs="*", metavar="memberID", help="ID of the member (hex)")
    p = leaf(
        member, "update", "Updates a member in the cluster", "client_member", "cmd_member_update"
    )
    p.add_argument("args", nargs="*", metavar="memberID", help="ID of the member (hex)")
    p.add_argument(
        "--peer-urls", default="", help="comma separated peer URLs for the updated member."
    )
    p = leaf(
        member,
        "promote",
        "Promotes a non-voting learner member to a voting one in the cluster (-w json and "
        "protobuf print the response as etcdctl 3.6 does; etcdctl 3.4 crashes there)",
        "client_member",
        "cmd_member_promote",
    )
    p.add_argument("args", nargs="*", metavar="memberID", help="ID of the learner (hex)")
    p = leaf(member, "list", "Lists all members in the cluster", "client_maint", "cmd_member_list")
    p.add_argument("args", nargs="*", help=argparse.SUPPRESS)
    p = leaf(
        member,
        "repair",
        "Rebuilds a member fenced by a CORRUPT alarm from a healthy member's state, verifies "
        "it against the quorum's state hash and clears the alarm",
        "client_repair",
        "cmd_member_repair",
    )
    p.add_argument("member_id", metavar="memberID", help="ID of the member to repair (hex)")
    p.add_argument(
        "--repair-timeout",
        type=float,
        default=120.0,
        help="seconds to wait for the repair (fetch, install, verification)",
    )

    endpoint = group("endpoint", "Endpoint related commands")
    for name, help_text, func in (
        (
            "status",
            "Prints out the status of endpoints specified in `--endpoints` flag. etcd's columns "
            "(etcdctl 3.4's) come first and unchanged; then raftkv's: RAFTKV VERSION (the "
            "member's release), CLUSTER VERSION (major.minor the cluster runs at) and STORAGE "
            "VERSION (etcd 3.6's column, moved to the end so that etcd 3.4's stay in place), "
            'in -w table and simple; -w json adds "RaftkvVersion", "ClusterVersion" and '
            '"StorageVersion" beside "Endpoint" and "Status", -w fields the same '
            'names after "Endpoint". A plain etcd leaves them empty. VERSION stays etcd\'s: the '
            "etcd API level raftkv serves",
            "cmd_endpoint_status",
        ),
        (
            "health",
            "Checks the healthiness of endpoints specified in `--endpoints` flag",
            "cmd_endpoint_health",
        ),
        (
            "hashkv",
            "Prints the KV history hash for each endpoint in --endpoints",
            "cmd_endpoint_hashkv",
        ),
    ):
        p = leaf(endpoint, name, help_text, "client_maint", func)
        p.add_argument(
            "--cluster", action="store_true", help="use all endpoints from the cluster member list"
        )
        if name == "hashkv":
            p.add_argument(
                "--rev",
                type=int,
                default=0,
                help="maximum revision to hash (default: all revisions)",
            )

    alarm = group("alarm", "Alarm related commands")
    leaf(alarm, "list", "Lists all alarms", "client_maint", "cmd_alarm_list")
    leaf(alarm, "disarm", "Disarms all alarms", "client_maint", "cmd_alarm_disarm")

    p = leaf(
        subparsers,
        "defrag",
        "Defragments the storage of the etcd members with given endpoints",
        "client_maint",
        "cmd_defrag",
    )
    p.add_argument(
        "--cluster", action="store_true", help="use all endpoints from the cluster member list"
    )

    snapshot = group("snapshot", "Manages etcd node snapshots")
    p = leaf(
        snapshot,
        "save",
        "Stores an etcd node backend snapshot to a given file (etcd's format: etcdctl and "
        "etcdutl read it)",
        "client_snapshot",
        "cmd_snapshot_save",
    )
    p.add_argument("args", nargs="*", metavar="filename")
    p = leaf(
        snapshot,
        "status",
        "Gets backend snapshot status of a given file (etcd's fields, plus the format, the "
        "consistent index and the state hash a raftkv snapshot recorded)",
        "client_snapshot",
        "cmd_snapshot_status",
    )
    p.add_argument("args", nargs="*", metavar="filename")
    p = leaf(
        snapshot,
        "restore",
        "Restores a snapshot (raftkv's or a real etcd's) into a new member's data directory; "
        "the SHA-256 and structure are checked, the imported state verified against the state "
        "hash a raftkv snapshot recorded, and the directory renamed into place only when "
        "complete",
        "client_snapshot",
        "cmd_snapshot_restore",
    )
    p.add_argument("args", nargs="*", metavar="filename")
    client_kv.add_restore_flags(p)

    p = leaf(
        subparsers,
        "move-leader",
        "Transfers leadership to another etcd cluster member.",
        "client_maint",
        "cmd_move_leader",
    )
    p.add_argument("args", nargs="*", metavar="transferee-member-id")
    downgrade = group(
        "downgrade",
        "Downgrade related commands (etcdctl 3.6's): the target is one minor below the "
        "cluster version, e.g. 0.2 in a 0.3 cluster (0.2 is the oldest release that knows "
        "downgrades)",
    )
    p = leaf(
        downgrade,
        "validate",
        "Validate downgrade capability before starting downgrade",
        "client_member",
        "cmd_downgrade_validate",
    )
    p.add_argument("args", nargs="*", metavar="TARGET_VERSION")
    p = leaf(
        downgrade,
        "enable",
        "Start a downgrade action to cluster (the cluster version is held at the target "
        "while members are replaced by the older release; it ends when all run it)",
        "client_member",
        "cmd_downgrade_enable",
    )
    p.add_argument("args", nargs="*", metavar="TARGET_VERSION")
    p = leaf(
        downgrade,
        "cancel",
        "Cancel the ongoing downgrade action to cluster",
        "client_member",
        "cmd_downgrade_cancel",
    )
    p.add_argument("args", nargs="*", help=argparse.SUPPRESS)
    leaf(
        subparsers,
        "version",
        "Prints the version of raftkv's client and, as etcdctl prints its own, the etcd API "
        'version it speaks ("API version: MAJOR.MINOR")',
        "client_maint",
        "cmd_version",
    )
