"""Repository-level pytest configuration: nothing here may depend on a running cluster."""
