"""The test toolkit around a fake cluster: what a test can inject, record and read back.

``_faults`` (injected failures, delays, killed instances, cut watches), ``_calls`` (the record
of every call served) and ``_calllog`` (the same as log lines), ``_intercept`` (the gRPC
interceptor that feeds both), ``_introspect`` (typed views of applications, sessions, tasks,
executors and objects), ``_report`` (the failure report sections of a failed test) and
``_workset`` (what a test created, so a shared cluster can be cleaned between tests).
``FakeCluster`` offers them as its own methods through its base, ``.._cluster_toolkit``.

Nothing is imported here.
"""
