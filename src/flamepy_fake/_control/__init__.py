"""The fake's control plane: what Flame v0.6.0's session manager decides, without transport.

``_records`` holds the records and specs the state is made of, ``_rules`` the validation and
state transitions upstream applies, ``_msgs`` upstream's exact refusal texts, ``_policies`` the
scheduling policies (priority, drf, gang), ``_state`` the thread-safe ``ClusterState`` the
servicer and the executor manager share, ``_scheduler`` the planning of executors per session,
and ``_frontend`` the ``flame.v1.Frontend`` servicer, the one module here that speaks gRPC.
The state model imports no transport code.

Nothing is imported here (the pytest plugin imports ``_policies`` at start-up and must stay light).
"""
