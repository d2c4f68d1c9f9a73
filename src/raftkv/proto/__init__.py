"""Protocol buffer definitions on etcd's wire, and the descriptor pool they live in.

This package owns the .proto sources (`mvccpb` in kv.proto, `authpb` in auth.proto,
`etcdserverpb` in rpc.proto) and the code `scripts/gen_proto` generates from them.

Contract: every generated module registers its descriptors in `POOL`, a pool private to
raftkv, never in protobuf's process-wide default pool. etcd's own message names
(`etcdserverpb.ResponseHeader`, `mvccpb.KeyValue`, ...) are also registered by third-party
etcd clients' generated code; keeping ours apart lets raftkv and such a client live in one
process. The wire format does not depend on the pool.
"""

from __future__ import annotations

from google.protobuf import descriptor_pool

POOL: descriptor_pool.DescriptorPool = descriptor_pool.DescriptorPool()
