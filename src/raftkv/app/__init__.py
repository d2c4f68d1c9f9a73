"""The member as a process, assembled from the server and the gRPC API above it.

Owns: running a member (``serve``: the gRPC services on the client URLs, HTTP on the metrics
URLs, signals and orderly shutdown) and its HTTP endpoints (``http``: ``/health`` and
``/metrics``).  Only the command line (``ctl``) imports this package; ``server`` and ``api``
never do.
"""
