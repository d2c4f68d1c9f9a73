"""raftkv: an etcd-compatible, Raft-replicated key-value store that keeps replicas provably identical."""

import os as _os

__version__ = "0.3.0"

if _os.environ.get("RAFTKV_PURE_PYTHON"):  # raftkv.build_info.PURE_PYTHON_ENV
    from raftkv.build_info import install_source_finder as _install

    _install()
