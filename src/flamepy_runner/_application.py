"""The application a Runner registers: a clone of the ``flmrun`` template with its package.

The seed guide's rule: the template (``flmrun`` unless ``runner_template`` says otherwise) gives
the shim, command, arguments, image, limits, schema and installer; the Runner gives the name,
a description, the package URL, a working directory of its own under the template's, and
``FLAME_PYTHON_VERSION`` when asked for one.
"""

from __future__ import annotations

from typing import Any

from ._config import FlameConfig
from ._exceptions import FlameError, NotFoundError
from ._frontend import FrontendClient
from ._proto import pb

__all__ = ["PYTHON_VERSION_ENV", "application_spec", "template_of"]

#: The environment variable a template's instances read for the interpreter version.
PYTHON_VERSION_ENV = "FLAME_PYTHON_VERSION"


def template_of(frontend: FrontendClient, config: FlameConfig) -> Any:
    """The registered template application (``config.runner_template``).

    Raises:
        NotFoundError: no such application; the text says how to check.
        FlameError: the lookup failed (its own class, with the template named).
    """
    name = config.runner_template
    hint = f"confirm the session manager is running and {name} appears in flmctl list application"
    try:
        template = frontend.get_application(name)
    except FlameError as exc:
        raise type(exc)(
            f"Failed to get application template '{name}': {exc.message}; {hint}", endpoint=exc.endpoint
        ) from exc
    if template is None:
        raise NotFoundError(
            f"Failed to get application template '{name}': no such application on {config.endpoint}; {hint}",
            endpoint=config.endpoint,
        )
    return template


def application_spec(template: Any, name: str, url: str, python_version: str | None) -> Any:
    """The ``flame.v1.ApplicationSpec`` of application ``name``, cloned from ``template``."""
    source = template.spec
    spec = pb.ApplicationSpec(
        shim=source.shim,
        description=f"Runner application: {name}",
        labels=list(source.labels),
        arguments=list(source.arguments),
        url=url,
    )
    for field in ("image", "command", "max_instances", "delay_release", "installer"):
        if source.HasField(field):
            setattr(spec, field, getattr(source, field))
    if source.HasField("schema"):
        spec.schema.CopyFrom(source.schema)
    if source.working_directory:
        spec.working_directory = f"{source.working_directory.rstrip('/')}/{name}"
    envs = [
        (e.name, e.value) for e in source.environments if e.name != PYTHON_VERSION_ENV or not python_version
    ]
    if python_version:
        envs.append((PYTHON_VERSION_ENV, python_version))
    spec.environments.extend(pb.Environment(name=k, value=v) for k, v in envs)
    return spec
