"""The consistency guard: apply digests, whole-state hashes, and the file checks and report
``raftkv check data`` builds on.

Pure building blocks; the server wires them into the apply path and the peer exchange.
Nothing here imports the server, the API or the tools above them (failpoints live in
``raftkv.failpoints``, the offline rebuild in ``raftkv.check``).
"""
