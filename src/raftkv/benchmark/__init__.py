"""The benchmark load generator behind ``raftkv benchmark`` and ``bench/compare_etcd.py``.

``workload`` says what a request is, ``runner`` drives many of them from several processes, and
``report`` turns latencies into etcd-style statistics.
"""
