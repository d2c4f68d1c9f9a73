"""Entry point of ``python -m raftkv.wal`` (see ``raftkv.wal.dump``)."""

from __future__ import annotations

import sys

from raftkv.wal.dump import main

if __name__ == "__main__":
    sys.exit(main())
