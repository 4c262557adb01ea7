"""The envelope an execution object travels in, so that a failed call reports its exception in
full through any ``flmrun`` program, flamepy 0.6.0's stock ``runpy`` included.

Stock ``runpy`` reports a failed task as ``TaskResult{-1, str(exception)}``: the task's event
holds the message, the output is empty, and the exception's type and traceback are lost. The
Runner therefore sends the execution object inside an envelope: every call carries, in a keyword
argument the envelope removes again, the id of a cache object; when the call raises, the envelope
writes a failure record (type, message, traceback, the pickled exception when it pickles) to
``<app>/<session>/<id>`` and re-raises the same exception, so the task's state, its event text
and everything else Flame records stay exactly as without the envelope. The client reads the
record when the task has failed (:func:`read_failure`).

Under our own worker the envelope writes nothing: the worker takes the keyword argument away
itself and puts the same record in the failed task's output (``_wire.encode_failure``), which
saves the cache round trip.

The envelope's classes are made inside a function, so cloudpickle sends them by value: the
executor needs nothing of ``flamepy_runner``. Their methods therefore use only builtins and what
they import themselves (the standard library, cloudpickle, and flamepy 0.6.0's cache on stock
executors).
"""

from __future__ import annotations

import functools
import inspect
import os
from typing import Any

from . import _wire
from ._cache import CacheClient, ObjectRef
from ._exceptions import NotFoundError

__all__ = ["FAILURE_KEYWORD", "enclose", "new_failure_id", "read_failure"]

FAILURE_KEYWORD = _wire.FAILURE_KEYWORD


def new_failure_id() -> str:
    """A fresh object id for one call's failure record (unique within its session)."""
    return "failure-" + os.urandom(8).hex()


def enclose(execution_object: Any, endpoint: str, key_prefix: str) -> Any:
    """The envelope of ``execution_object``: a class for a class (the executor instantiates it,
    which instantiates the enclosed class), else an instance standing for the function or object.

    Args:
        execution_object: the user's function, class or instance.
        endpoint: the cache endpoint failure records go to (the one the client's refs name).
        key_prefix: ``<app>/<session>``, where the records go.
    """
    envelope, callable_envelope, envelope_class = _envelope_types()
    if inspect.isclass(execution_object):
        return envelope_class(execution_object, endpoint, key_prefix)
    # callable() must answer as for the enclosed object: flamepy's RunnerContext tells functions
    # from instances by it (and refuses a "stateful function").
    kind = callable_envelope if callable(execution_object) else envelope
    return kind(execution_object, endpoint, key_prefix)


@functools.cache
def _envelope_types() -> tuple[type[Any], type[Any], Any]:
    keyword = FAILURE_KEYWORD  # captured by value: the executor has no flamepy_runner

    class Envelope:
        """Stands for an execution object on the executor; see the module docstring."""

        def __init__(self, target: Any, endpoint: str, key_prefix: str) -> None:
            self.__dict__["_flamepy_runner_target"] = target
            self.__dict__["_flamepy_runner_where"] = (endpoint, key_prefix)

        def __getattr__(self, name: str) -> Any:
            if name.startswith(("__", "_flamepy_runner_")):  # unpickling looks these up first
                raise AttributeError(name)
            attr = getattr(self._flamepy_runner_target, name)
            if name.startswith("_") or not callable(attr):
                return attr

            def method(*args: Any, **kwargs: Any) -> Any:
                return self._flamepy_runner_invoke(attr, args, kwargs)

            return method

        def __setattr__(self, name: str, value: Any) -> None:
            setattr(self._flamepy_runner_target, name, value)

        def _flamepy_runner_invoke(self, fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            failure_id = kwargs.pop(keyword, None)
            try:
                return fn(*args, **kwargs)
            except Exception as exc:
                if isinstance(failure_id, str):
                    self._flamepy_runner_report(exc, failure_id)
                raise

        def _flamepy_runner_report(self, exc: BaseException, failure_id: str) -> None:
            import sys

            try:
                import traceback

                import cloudpickle
                from flamepy.cache import ObjectRef as FlamepyRef
                from flamepy.cache import update_object

                cls = type(exc)
                module = cls.__module__
                qualname = cls.__qualname__
                type_name = qualname if module in ("builtins", "__main__") else f"{module}.{qualname}"
                # Caught in the envelope's call frame: the user's frames come after it.
                tb = exc.__traceback__
                if tb is not None and tb.tb_next is not None:
                    tb = tb.tb_next
                text = "".join(traceback.format_exception(cls, exc, tb))
                if len(text) > 64 * 1024:
                    text = "...\n" + text[-64 * 1024 :]
                try:
                    pickled = cloudpickle.dumps(exc)
                except Exception:
                    pickled = None
                record = {"type": type_name, "message": str(exc), "traceback": text, "exception": pickled}
                endpoint, prefix = self._flamepy_runner_where
                update_object(FlamepyRef(endpoint=endpoint, key=f"{prefix}/{failure_id}", version=0), record)
            except Exception as report_exc:  # never hide the user's exception behind our own
                print(
                    f"flamepy_runner: could not record the failure in the cache: {report_exc}",
                    file=sys.stderr,
                )

    class CallableEnvelope(Envelope):
        """Stands for a function or a callable instance."""

        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            return self._flamepy_runner_invoke(self._flamepy_runner_target, args, kwargs)

    def envelope_class(target: type[Any], endpoint: str, key_prefix: str) -> type[Any]:
        base = CallableEnvelope if "__call__" in dir(target) else Envelope

        class EnvelopeOfClass(base):  # type: ignore[valid-type,misc]
            """A class whose instantiation instantiates the enclosed class (at session enter)."""

            def __init__(self) -> None:
                super().__init__(target(), endpoint, key_prefix)

        EnvelopeOfClass.__qualname__ = EnvelopeOfClass.__name__ = f"Envelope[{target.__qualname__}]"
        return EnvelopeOfClass

    return Envelope, CallableEnvelope, envelope_class


def read_failure(cache: CacheClient, key_prefix: str, failure_id: str) -> _wire.RemoteFailure | None:
    """The failure record an envelope wrote for a failed call, or None when there is none (the
    call failed before it reached the envelope, or the executor could not write it)."""
    try:
        record = cache.get_object(ObjectRef(cache.endpoint, f"{key_prefix}/{failure_id}", 0))
    except NotFoundError:
        return None
    return _wire.failure_from_record(record)
