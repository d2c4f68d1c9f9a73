"""The consistency guard: failpoints, apply digests and whole-state hashes.

Pure building blocks; the server wires them into the apply path and the peer exchange.
"""
