"""The contract suite's backends: a re-export of :mod:`flamepy_fake._backends`, where they live.

The plugin's ``--flame-backend real|external`` uses the same code, so users get it too; the
contract tests keep importing ``from _backends import ...``.
"""

from flamepy_fake._backends import (
    CLUSTER_CONFIG,
    DEFAULT_RESREQ,
    EXECUTOR_MANAGER_IMAGE,
    FLAME_VERSION,
    OBJECT_CACHE_IMAGE,
    REAL_CA_FILE_VAR,
    REAL_CACHE_ENDPOINT_VAR,
    REAL_ENDPOINT_VAR,
    SESSION_MANAGER_IMAGE,
    FlameBackend,
    Names,
    docker_backend,
    docker_problem,
    external_backend,
    fake_backend,
    open_channel,
    real_backend,
    wait_until_ready,
)
from flamepy_fake._errors import Unavailable

__all__ = [
    "CLUSTER_CONFIG",
    "DEFAULT_RESREQ",
    "EXECUTOR_MANAGER_IMAGE",
    "FLAME_VERSION",
    "OBJECT_CACHE_IMAGE",
    "REAL_CACHE_ENDPOINT_VAR",
    "REAL_CA_FILE_VAR",
    "REAL_ENDPOINT_VAR",
    "SESSION_MANAGER_IMAGE",
    "FlameBackend",
    "Names",
    "Unavailable",
    "docker_backend",
    "docker_problem",
    "external_backend",
    "fake_backend",
    "open_channel",
    "real_backend",
    "wait_until_ready",
]
