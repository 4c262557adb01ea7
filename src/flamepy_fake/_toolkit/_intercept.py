"""The Frontend servicer wrapper: records every call and applies injected faults.

:func:`intercepted` wraps each RPC method of a servicer once, at start; the wrapper times the
call, asks :class:`~._faults.Faults` (one attribute read when none is set), and appends a
:class:`~._calls.CallRecord` when the call ends. It is the only place Frontend faults act.
"""

from __future__ import annotations

import itertools
import time
import types
from collections.abc import Callable, Collection, Generator, Iterator
from typing import Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor

from ._calls import FRONTEND_SERVICE, CallLog
from ._faults import CUT_WATCH, DELAY, FAIL, CallTarget, Faults

__all__ = ["intercepted"]

_Keys = tuple[str | None, str | None, str | None]


def _status(context: grpc.ServicerContext, failed: bool) -> str:
    code = context.code()
    if code is None:
        if failed and not context.is_active():
            return "CANCELLED"  # the client went away (a stream closed under us)
        return "UNKNOWN" if failed else "OK"
    return str(code.name)


def _key_reader(request_fields: Collection[str], method: str) -> Callable[[Any], _Keys]:
    """A function returning ``(app, session_id, task_id)`` of a request of ``method``."""
    has = set(request_fields)
    app_field = "name" if method.endswith("Application") and "name" in has else None

    def keys(request: Any) -> _Keys:
        app = getattr(request, app_field) or None if app_field else None
        sid = (request.session_id or None) if "session_id" in has else None
        tid = (request.task_id or None) if "task_id" in has else None
        if "session" in has and request.HasField("session"):
            app = request.session.application or None
        if "task" in has and request.HasField("task"):
            sid = request.task.session_id or None
        return app, sid, tid

    return keys


def intercepted(servicer: object, service: ServiceDescriptor, calls: CallLog, faults: Faults) -> object:
    """An object with the same RPC methods as ``servicer``, recorded and fault-injectable."""
    wrapper = types.SimpleNamespace()
    for method in service.methods:
        impl = getattr(servicer, method.name, None)
        if impl is None:
            continue
        keys = _key_reader(method.input_type.fields_by_name, method.name)
        wrap = _streaming if method.server_streaming else _unary
        setattr(wrapper, method.name, wrap(method.name, impl, keys, calls, faults))
    return wrapper


def _before(target: CallTarget, faults: Faults, context: grpc.ServicerContext) -> None:
    delay = faults.take(DELAY, target)
    if delay is not None:
        time.sleep(delay.seconds)
    fail = faults.take(FAIL, target)
    if fail is not None:
        assert fail.status is not None
        context.abort(grpc.StatusCode[fail.status], fail.message or "")


def _unary(
    name: str, impl: Callable[..., Any], keys: Callable[[Any], _Keys], calls: CallLog, faults: Faults
) -> Callable[..., Any]:
    def call(request: Any, context: grpc.ServicerContext) -> Any:
        start = time.perf_counter()
        failed = True
        app, sid, tid = keys(request)
        try:
            if faults.armed:
                _before(CallTarget(name, app, sid, tid), faults, context)
            response = impl(request, context)
            failed = False
            return response
        finally:
            calls.record(
                FRONTEND_SERVICE, name, _status(context, failed), time.perf_counter() - start, app, sid, tid
            )

    return call


def _streaming(
    name: str,
    impl: Callable[..., Generator[Any, None, None]],
    keys: Callable[[Any], _Keys],
    calls: CallLog,
    faults: Faults,
) -> Callable[..., Iterator[Any]]:
    def call(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        start = time.perf_counter()
        failed = True
        app, sid, tid = keys(request)
        try:
            cut = None
            if faults.armed:
                target = CallTarget(name, app, sid, tid)
                _before(target, faults, context)
                cut = faults.take(CUT_WATCH, target) if name == "WatchTask" else None
            if cut is None:
                yield from impl(request, context)
            else:
                if cut.after:
                    updates = impl(request, context)
                    try:
                        yield from itertools.islice(updates, cut.after)
                    finally:
                        updates.close()
                if cut.status is not None:
                    context.abort(grpc.StatusCode[cut.status], cut.message or "")
            failed = False
        finally:
            calls.record(
                FRONTEND_SERVICE, name, _status(context, failed), time.perf_counter() - start, app, sid, tid
            )

    return call
