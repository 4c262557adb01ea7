"""The pytest plugin's parts; ``flamepy_fake.plugin`` (the entry point) keeps the hooks and fixtures.

``_settings`` resolves the ``--flame-*`` options and ini settings, ``_options`` validates the
``@pytest.mark.flame`` options, ``_interrupts`` turns SIGTERM into pytest's interrupt and counts
signals, ``_pool`` keeps the clusters shared by a module or a session, ``_autostart`` runs one
cluster for a whole run, ``_remote`` wraps a real or external cluster, and ``_flamepy_reset``
forgets flamepy's process-wide connections between clusters.

Nothing is imported here: pytest imports the plugin in every run, so it must stay cheap.
"""
