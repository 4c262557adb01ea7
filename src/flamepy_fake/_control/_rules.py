"""Upstream's validation rules and default applications, for the fake session manager's state.

Each check raises the exact error upstream sends (texts in :mod:`flamepy_fake._control._msgs`): a
:class:`StateError` for the pre-checks that upstream answers with a gRPC status, and a
:class:`ResultError` for those it reports in-band as ``Result{-1}``.
"""

from __future__ import annotations

import importlib
import json
import re
from typing import Any

from . import _msgs as msgs
from ._records import AppRecord, AppSpec, ResReq, ResultError, SessionSpec, StateError

__all__ = [
    "batch_of",
    "check_app_spec",
    "check_batch_alignment",
    "default_apps",
    "parse_task_id",
    "resreq_debug",
    "rust_option",
    "validate_app_name",
]

_APP_NAME_LIMIT = 253
_APP_NAME_CHARS = re.compile(r"[A-Za-z0-9._-]*")
_I64 = re.compile(r"[+-]?[0-9]+")
_I64_MIN, _I64_MAX = -(2**63), 2**63 - 1


def rust_option(value: object) -> str:
    """Render an optional value as Rust's ``Debug`` does: ``None`` or ``Some(<value>)``."""
    return msgs.RUST_NONE if value is None else msgs.RUST_SOME.format(value=value)


def resreq_debug(resreq: ResReq) -> str:
    """Render a stored resreq as upstream's spec-mismatch message does (always ``Some(...)``)."""
    cpu, memory, gpu = resreq
    return rust_option(msgs.RUST_RESREQ.format(cpu=cpu, memory=memory, gpu=gpu))


def _check_schema(kind: str, text: str) -> None:
    """Raise INVALID_ARGUMENT unless ``text`` is JSON that is a valid JSON Schema document."""
    try:
        document = json.loads(text)
    except (ValueError, RecursionError) as exc:  # RecursionError: absurdly deep nesting
        raise StateError("INVALID_ARGUMENT", msgs.APP_SCHEMA_INVALID.format(kind=kind, error=exc)) from None
    # Imported on first use: jsonschema is slow to import and only schema-bearing registrations need it.
    jsonschema: Any = importlib.import_module("jsonschema")
    validators: Any = importlib.import_module("jsonschema.validators")

    if isinstance(document, dict) and isinstance(document.get("$schema"), str):
        cls: Any = validators.validator_for(document, default=None)
        if cls is None:
            error = f"unknown $schema {document['$schema']!r}"
            raise StateError("INVALID_ARGUMENT", msgs.APP_SCHEMA_INVALID.format(kind=kind, error=error))
    else:
        cls = jsonschema.Draft202012Validator  # what upstream's validator assumes without $schema
    try:
        cls.check_schema(document)
    except RecursionError:
        error = "schema nesting is too deep"
        raise StateError("INVALID_ARGUMENT", msgs.APP_SCHEMA_INVALID.format(kind=kind, error=error)) from None
    except jsonschema.SchemaError as exc:
        raise StateError(
            "INVALID_ARGUMENT", msgs.APP_SCHEMA_INVALID.format(kind=kind, error=exc.message)
        ) from None


def check_app_spec(spec: AppSpec | None) -> AppSpec:
    """Run the checks upstream runs before its controller; return the spec when it passes.

    Raises:
        StateError: INVALID_ARGUMENT (a real status) for a missing spec, a schema that is not
            valid JSON Schema, or a relative working_directory.
    """
    if spec is None:
        raise StateError("INVALID_ARGUMENT", msgs.APP_SPEC_MISSING)
    if spec.schema is not None:
        for kind, text in zip(msgs.APP_SCHEMA_KINDS, spec.schema, strict=True):
            if text is not None:
                _check_schema(kind, text)
    wd = spec.working_directory
    if wd and not wd.startswith("/"):
        raise StateError("INVALID_ARGUMENT", msgs.APP_WORKDIR_NOT_ABSOLUTE.format(path=wd))
    return spec


def validate_app_name(name: str) -> None:
    """Apply upstream's application name rules, in upstream's order.

    Raises:
        ResultError: the first rule broken (reported in-band as ``Result{-1}``).
    """
    if not name:
        raise ResultError("INVALID_ARGUMENT", msgs.APP_NAME_EMPTY)
    if len(name.encode()) > _APP_NAME_LIMIT:
        raise ResultError("INVALID_ARGUMENT", msgs.APP_NAME_TOO_LONG.format(limit=_APP_NAME_LIMIT))
    if ".." in name or "/" in name or "\\" in name:
        raise ResultError("INVALID_ARGUMENT", msgs.APP_NAME_TRAVERSAL.format(name=name))
    if name.startswith((".", "-")):
        raise ResultError("INVALID_ARGUMENT", msgs.APP_NAME_BAD_START.format(name=name))
    if not _APP_NAME_CHARS.fullmatch(name):
        raise ResultError("INVALID_ARGUMENT", msgs.APP_NAME_BAD_CHARS.format(name=name))


def batch_of(batch_size: int) -> int:
    """The batch size v0.6.0 stores and compares: ``max(batch_size, 1)`` (unset is 0)."""
    return max(batch_size, 1)


def check_batch_alignment(spec: SessionSpec) -> None:
    """v0.6.0's batch check of a session spec (CreateSession, OpenSession with a spec).

    With B = ``max(batch_size, 1)`` > 1, ``min_instances`` must be 0 or a multiple of B and
    ``max_instances``, when set, a multiple of B (``Some(0)`` passes). ``min > max`` is not
    checked, as upstream.

    Raises:
        StateError: INVALID_ARGUMENT naming the first misaligned field.
    """
    batch = batch_of(spec.batch_size)
    if batch == 1:
        return
    if spec.min_instances != 0 and spec.min_instances % batch:
        message = msgs.BATCH_MIN_MISALIGNED.format(min=spec.min_instances, batch=batch)
        raise StateError("INVALID_ARGUMENT", message)
    if spec.max_instances is not None and spec.max_instances % batch:
        message = msgs.BATCH_MAX_MISALIGNED.format(max=spec.max_instances, batch=batch)
        raise StateError("INVALID_ARGUMENT", message)


def parse_task_id(text: str) -> int:
    """Parse a task id like Rust's ``i64::from_str``: optional sign, ASCII digits, in range.

    Raises:
        StateError: INVALID_ARGUMENT "invalid task id" for anything else.
    """
    if not _I64.fullmatch(text) or not text.isascii():
        raise StateError("INVALID_ARGUMENT", msgs.TASK_ID_INVALID)
    value = int(text)
    if not _I64_MIN <= value <= _I64_MAX:
        raise StateError("INVALID_ARGUMENT", msgs.TASK_ID_INVALID)
    return value


# Upstream's literal default applications (common/src/lib.rs `default_applications` at v0.6.0),
# byte for byte: compact JSON, keys in upstream's order, the descriptions included.
_FLMEXEC_INPUT_SCHEMA = (
    '{"$schema":"http://json-schema.org/draft-07/schema#","type":"object","properties":'
    '{"language":{"type":"string","description":"The language of the script, e.g. python"},'
    '"code":{"type":"string","description":"The code of the script to run, e.g. print(\'Hello, world!\')"},'
    '"input":{"type":"array","items":{"type":"integer",'
    '"description":"The input to the script in bytes, e.g. [0x1, 0x2]"}}},"required":["language","code"]}'
)
_FLMEXEC_OUTPUT_SCHEMA = (
    '{"$schema":"http://json-schema.org/draft-07/schema#","type":"string",'
    '"description":"The output of the script in UTF-8."}'
)


def default_apps(created: int) -> list[AppRecord]:
    """Return fresh records of the three applications upstream registers at start-up.

    Args:
        created: their creation time, epoch milliseconds.
    """
    return [
        AppRecord(
            name="flmexec",
            description="The Flame Executor application, which is used to run scripts.",
            command="${FLAME_HOME}/bin/flmexec-service",
            schema_input=_FLMEXEC_INPUT_SCHEMA,
            schema_output=_FLMEXEC_OUTPUT_SCHEMA,
            has_schema=True,
            creation_time=created,
        ),
        AppRecord(
            name="flmping",
            command="${FLAME_HOME}/bin/flmping-service",
            url="file://${FLAME_HOME}/bin/flmping-service",
            has_schema=True,
            creation_time=created,
        ),
        AppRecord(
            name="flmrun",
            description="The Flame Runner application for executing customized Python applications.",
            command="${FLAME_HOME}/bin/uv",
            arguments=[
                "run",
                "--python",
                "python${FLAME_PYTHON_VERSION}",
                "python",
                "-m",
                "flamepy.runner.runpy",
            ],
            installer="python",
            has_schema=True,
            creation_time=created,
        ),
    ]
