"""Repository-level pytest configuration: nothing here may depend on a running cluster.

``pytester`` is enabled here (it must be declared in the root conftest) for the plugin tests in
``tests/unit/test_plugin.py``; the ``flame_cluster`` fixture itself comes from the installed
``flamepy_fake.plugin`` entry point.
"""

pytest_plugins = ("pytester",)
