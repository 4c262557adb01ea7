"""Pickle-compatible Runner payloads: the objects the stock ``flmrun`` program exchanges.

flamepy's executor (``python -m flamepy.runner.runpy``) reads two pickled classes by name:
``flamepy.runner.types.RunnerContext`` (the session's common data) and
``flamepy.runner.types.RunnerRequest`` (each task's input). This module defines our own
dataclasses with the same pickled state and converts in both directions without needing
flamepy at all:

* :func:`dumps` pickles with cloudpickle and then renames our classes to flamepy's in the
  byte stream. The module name ``flamepy_runner._wire`` was chosen to have exactly the
  length of ``flamepy.runner.types`` (20 bytes), so the rename is an in-place overwrite of
  the ``SHORT_BINUNICODE`` argument: no frame length or memo index moves.
* :func:`loads` unpickles with an :class:`Unpickler` whose ``find_class`` falls back to our
  classes when flamepy's cannot be imported, so payloads written by flamepy 0.6.0's Runner
  are readable in an environment without flamepy.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import os
import pickle
import traceback
import types
from typing import Any

import bson
import cloudpickle

from ._types import SessionContext

__all__ = [
    "FAILURE_KEYWORD",
    "FLAMEPY_MODULE",
    "RemoteFailure",
    "RunnerContext",
    "RunnerRequest",
    "Unpickler",
    "decode_failure",
    "dumps",
    "encode_failure",
    "failure_from_record",
    "is_object_ref",
    "is_runner_context",
    "is_runner_request",
    "loads",
    "type_name_of",
]

#: Module that names the Runner payload classes on the wire.
FLAMEPY_MODULE = "flamepy.runner.types"
_FLAMEPY_CACHE_MODULE = "flamepy.core.cache"
_OUR_MODULE = __name__
# The in-place rename below depends on this; a rename of this file must keep the length.
assert len(_OUR_MODULE) == len(FLAMEPY_MODULE), "the wire module name must be 20 characters long"

_SHORT_BINUNICODE = b"\x8c"


@dataclasses.dataclass
class RunnerContext:
    """The common data of a Runner session, pickled under ``flamepy.runner.types.RunnerContext``.

    The six fields are exactly the pickled state flamepy's executor reads; ``__init__`` does
    no validation (deciding the fields is the Runner's job, and unpickling never calls it).

    Args:
        execution_object: the function, class or instance the session serves.
        stateful: whether the executor writes the object back after every task.
        autoscale: whether the session scales with its task load.
        warmup: instances requested at session start.
        min_instances: the session's ``min_instances``.
        max_instances: the session's ``max_instances`` (None: unbounded).
    """

    execution_object: Any
    stateful: bool | None = None
    autoscale: bool | None = None
    warmup: int = 0
    min_instances: int = 0
    max_instances: int | None = None


@dataclasses.dataclass
class RunnerRequest:
    """One task of a Runner session, pickled under ``flamepy.runner.types.RunnerRequest``.

    Args:
        method: the method to call on the execution object; None calls the object itself.
        args: positional arguments (tuple or list) or None.
        kwargs: keyword arguments or None.
    """

    method: str | None = None
    args: tuple[Any, ...] | list[Any] | None = None
    kwargs: dict[str, Any] | None = None


def _rename_pattern(cls: type) -> tuple[bytes, bytes]:
    module_ours = _SHORT_BINUNICODE + bytes([len(_OUR_MODULE)]) + _OUR_MODULE.encode()
    module_theirs = _SHORT_BINUNICODE + bytes([len(FLAMEPY_MODULE)]) + FLAMEPY_MODULE.encode()
    name = cls.__qualname__.encode()
    # MEMOIZE (0x94) follows each string, STACK_GLOBAL (0x93) follows the pair.
    tail = b"\x94" + _SHORT_BINUNICODE + bytes([len(name)]) + name + b"\x94\x93"
    return module_ours + tail, module_theirs + tail


_RENAMES = {cls: _rename_pattern(cls) for cls in (RunnerContext, RunnerRequest)}
_SCAN_LIMIT = 64  # the outer object's class reference is at the start of the stream


class _ContextPickler(cloudpickle.Pickler):  # type: ignore[misc]
    """Pickles an execution object so that an executor without flamepy_runner can load it.

    A :class:`SessionContext` set as ``_session_context`` on a function, class or instance
    travels with it, but only the client reads it (to name the session). It is sent as a
    ``types.SimpleNamespace`` with the same fields: by reference, our class would make the
    executor import flamepy_runner, which stock flmrun does not have.
    """

    def reducer_override(self, obj: Any) -> Any:
        if type(obj) is SessionContext:
            fields = {"session_id": obj.session_id, "application_name": obj.application_name}
            return types.SimpleNamespace, (), fields
        return super().reducer_override(obj)


def dumps(obj: RunnerContext | RunnerRequest) -> bytes:
    """Pickle ``obj`` with cloudpickle so that it unpickles as flamepy's class of the same name.

    Args:
        obj: a :class:`RunnerContext` or :class:`RunnerRequest`; its fields may hold anything
            cloudpickle can serialise (functions and classes by value, as flamepy does).

    Returns:
        The pickle bytes: ``PROTO 5``, ``STACK_GLOBAL 'flamepy.runner.types' '<Class>'``,
        ``NEWOBJ`` with the field dict as state.

    Raises:
        TypeError: ``obj`` is not one of the two wire classes.
    """
    pattern = _RENAMES.get(type(obj))
    if pattern is None:
        raise TypeError(f"expected RunnerContext or RunnerRequest, got {type(obj).__name__}")
    if isinstance(obj, RunnerContext):
        buffer = io.BytesIO()
        _ContextPickler(buffer, protocol=5).dump(obj)
        data = buffer.getvalue()
    else:
        data = cloudpickle.dumps(obj, protocol=5)
    ours, theirs = pattern
    at = data.find(ours, 0, _SCAN_LIMIT + len(ours))
    if at < 0:  # pragma: no cover - only if the pickler changes its opcode layout
        raise RuntimeError(f"unexpected pickle layout for {type(obj).__name__}")
    return data[:at] + theirs + data[at + len(ours) :]


@functools.cache
def _fallbacks() -> dict[tuple[str, str], Any]:
    from ._cache import ObjectRef

    return {
        (FLAMEPY_MODULE, "RunnerContext"): RunnerContext,
        (FLAMEPY_MODULE, "RunnerRequest"): RunnerRequest,
        (_FLAMEPY_CACHE_MODULE, "ObjectRef"): ObjectRef,
    }


class Unpickler(pickle.Unpickler):
    """An unpickler that reads flamepy's Runner payloads with or without flamepy installed.

    Classes resolve normally first (so with flamepy importable, flamepy's own classes come
    back); only when ``flamepy.runner.types.RunnerContext``/``RunnerRequest`` or
    ``flamepy.core.cache.ObjectRef`` cannot be imported are ours substituted. With
    ``prefer_ours`` ours are used at once: importing flamepy costs about 0.4 s (it pulls in its
    web stack), which our worker does not need. Everything cloudpickle writes (functions and
    classes by value) loads as with ``cloudpickle.loads``.
    """

    def __init__(self, file: io.BytesIO, *, prefer_ours: bool = False) -> None:
        super().__init__(file)
        self._prefer_ours = prefer_ours

    def find_class(self, module: str, name: str) -> Any:
        """Resolve ``module.name``, substituting our wire classes for flamepy's where needed."""
        if self._prefer_ours:
            ours = _fallbacks().get((module, name))
            if ours is not None:
                return ours
        try:
            return super().find_class(module, name)
        except (ImportError, AttributeError):
            substitute = _fallbacks().get((module, name))
            if substitute is None:
                raise
            return substitute


def loads(data: bytes, *, prefer_ours: bool = False) -> Any:
    """Unpickle Runner payload bytes written by flamepy or by :func:`dumps`.

    Args:
        data: the pickle bytes.
        prefer_ours: read flamepy's RunnerContext, RunnerRequest and ObjectRef as our classes
            without importing flamepy (what our worker does).

    Returns:
        The object; a RunnerContext/RunnerRequest is flamepy's class when flamepy is
        importable (and ``prefer_ours`` is false) and ours otherwise (see
        :func:`is_runner_context`).
    """
    return Unpickler(io.BytesIO(data), prefer_ours=prefer_ours).load()


def _named(obj: object, names: tuple[tuple[str, str], ...]) -> bool:
    cls = type(obj)
    return (cls.__module__, cls.__qualname__) in names


def is_runner_context(obj: object) -> bool:
    """Whether ``obj`` is a RunnerContext, ours or flamepy's."""
    return isinstance(obj, RunnerContext) or _named(obj, ((FLAMEPY_MODULE, "RunnerContext"),))


def is_runner_request(obj: object) -> bool:
    """Whether ``obj`` is a RunnerRequest, ours or flamepy's."""
    return isinstance(obj, RunnerRequest) or _named(obj, ((FLAMEPY_MODULE, "RunnerRequest"),))


def is_object_ref(obj: object) -> bool:
    """Whether ``obj`` is an ObjectRef instance, ours or flamepy's."""
    from ._cache import ObjectRef

    return isinstance(obj, ObjectRef) or _named(obj, ((_FLAMEPY_CACHE_MODULE, "ObjectRef"),))


# -- failure details ------------------------------------------------------------------------------

#: Marker field of the failure record our worker returns as a failed task's output.
_FAILURE_MARKER = "flamepy_runner.failure"
#: Longest traceback kept in a failure record (the tail is kept: the raise site matters most).
MAX_TRACEBACK_CHARS = 64 * 1024
#: The keyword argument of a Runner call that names its failure record (see ``_envelope``); the
#: envelope, or our worker, removes it before the call.
FAILURE_KEYWORD = "__flamepy_runner_failure_id__"
#: The name of the envelope's frame that calls the user's code: the user's frames follow it
#: (cloudpickle names the file of by-value code ``<dynamic-code>``, so names are what is left).
ENVELOPE_CALL_FRAME = "_flamepy_runner_invoke"
_OWN_DIR = os.path.dirname(os.path.abspath(__file__))


@dataclasses.dataclass(frozen=True)
class RemoteFailure:
    """What the executor reports about an exception raised by a task.

    Args:
        type_name: the exception's class, ``module.QualName`` (the bare name for builtins), as
            Python's traceback prints it.
        message: ``str(exception)``, the same text as the task's failure event.
        traceback: the formatted traceback of the user's frames, possibly cut at the front.
        exception: the exception, cloudpickled, when it pickles.
    """

    type_name: str
    message: str
    traceback: str
    exception: bytes | None = None


def type_name_of(cls: type[BaseException]) -> str:
    """``module.QualName`` of an exception class, the bare name for builtins and ``__main__``."""
    module = cls.__module__
    return cls.__qualname__ if module in ("builtins", "__main__") else f"{module}.{cls.__qualname__}"


def _user_traceback(exc: BaseException) -> str:
    """The traceback of the user's frames: after the envelope's call frame (see ``_envelope``),
    or without the leading frames of flamepy_runner's own files (the worker)."""
    tb = exc.__traceback__
    probe = tb
    while probe is not None and probe.tb_frame.f_code.co_name != ENVELOPE_CALL_FRAME:
        probe = probe.tb_next
    if probe is not None and probe.tb_next is not None:
        tb = probe.tb_next
    else:
        while tb is not None and tb.tb_next is not None and _is_own(tb.tb_frame.f_code.co_filename):
            tb = tb.tb_next
    text = "".join(traceback.format_exception(type(exc), exc, tb))
    if len(text) > MAX_TRACEBACK_CHARS:
        text = "...\n" + text[-MAX_TRACEBACK_CHARS:]
    return text


def _is_own(filename: str) -> bool:
    return os.path.dirname(os.path.abspath(filename)) == _OWN_DIR


def encode_failure(exc: BaseException) -> bytes:
    """The output of a failed task with our worker: BSON with the exception's type, text,
    traceback and the pickled exception (when it pickles).

    flamepy's stock executor leaves a failed task's output empty; clients that do not know this
    record ignore it (the failure text is in the task's event either way).
    """
    doc: dict[str, Any] = {
        _FAILURE_MARKER: 1,
        "type": type_name_of(type(exc)),
        "message": str(exc),
        "traceback": _user_traceback(exc),
    }
    with contextlib.suppress(Exception):  # unpicklable: the type, text and traceback still travel
        doc["exception"] = bson.Binary(cloudpickle.dumps(exc))
    return bytes(bson.encode(doc))


def decode_failure(output: bytes) -> RemoteFailure | None:
    """The :class:`RemoteFailure` in a failed task's output, or None for any other output."""
    try:
        doc = bson.decode(output)
    except Exception:
        return None
    if doc.get(_FAILURE_MARKER) != 1:
        return None
    return failure_from_record(doc)


def failure_from_record(record: Any) -> RemoteFailure | None:
    """The :class:`RemoteFailure` in a record (a mapping with ``type``, ``message``,
    ``traceback`` and optionally ``exception``), or None when it is not one."""
    if not isinstance(record, dict):
        return None
    fields = (record.get("type"), record.get("message"), record.get("traceback"))
    if not all(isinstance(f, str) for f in fields):
        return None
    pickled = record.get("exception")
    return RemoteFailure(
        type_name=fields[0],  # type: ignore[arg-type]
        message=fields[1],  # type: ignore[arg-type]
        traceback=fields[2],  # type: ignore[arg-type]
        exception=bytes(pickled) if isinstance(pickled, (bytes, bytearray)) else None,
    )
