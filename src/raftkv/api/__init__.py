"""etcd v3 gRPC services: thin translators between the wire and ``raftkv.server.Member``."""
