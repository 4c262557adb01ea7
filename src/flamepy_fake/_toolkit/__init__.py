"""The test toolkit around a fake cluster: what a test can inject, record and read back.

``_faults`` (injected failures, delays, killed instances, cut watches), ``_calls`` (the record
of every call served) and ``_calllog`` (the same as log lines), ``_intercept`` (the gRPC
interceptor that feeds both), ``_introspect`` (typed views of applications, sessions, tasks,
executors and objects), ``_report`` (the failure report sections of a failed test),
``_workset`` (what a test created, so a shared cluster can be cleaned between tests), and
``_cluster_toolkit`` (``FakeCluster``'s base: those accessors as the cluster's own methods).

Nothing is imported here.
"""
