"""gRPC adapter of the Frontend service over :class:`~flamepy_fake._control._state.ClusterState`.

Thin on purpose: each RPC converts the request into state inputs, calls one state method and
converts the records back. Refusals come out of the state as :class:`StateError` and become a
gRPC status in :func:`_abort`, the only place that does so; the three application RPCs report
:class:`ResultError` in-band as ``Result{-1, message}``, as upstream does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, NoReturn, TypeVar

import grpc

from flamepy_runner._for_fake import pb

from . import _msgs as msgs
from . import _state as st
from ._records import TERMINAL_TASK_STATES
from ._state import ClusterState, ResultError, StateError

__all__ = [
    "FrontendServicer",
    "app_to_pb",
    "session_to_pb",
    "task_to_pb",
]

_T = TypeVar("_T")


def _abort(context: grpc.ServicerContext, error: StateError) -> NoReturn:
    """Send ``error`` as the RPC's status; never returns (grpc raises to end the handler)."""
    context.abort(getattr(grpc.StatusCode, error.code), error.message)
    raise AssertionError("unreachable: context.abort raises")  # pragma: no cover


def _call(context: grpc.ServicerContext, fn: Callable[[], _T]) -> _T:
    try:
        return fn()
    except StateError as error:
        _abort(context, error)


def _result(context: grpc.ServicerContext, fn: Callable[[], None]) -> Any:
    try:
        fn()
    except ResultError as error:
        return pb.Result(return_code=-1, message=error.message)
    except StateError as error:
        _abort(context, error)
    return pb.Result(return_code=0)


# -- pb → state ---------------------------------------------------------------------------------


def _opt(message: Any, name: str) -> Any:
    return getattr(message, name) if message.HasField(name) else None


def _app_spec(request: Any) -> st.AppSpec | None:
    if not request.HasField("application"):
        return None
    spec = request.application
    schema = None
    if spec.HasField("schema"):
        schema = (_opt(spec.schema, "input"), _opt(spec.schema, "output"), _opt(spec.schema, "common_data"))
    return st.AppSpec(
        shim=spec.shim,
        description=_opt(spec, "description"),
        labels=list(spec.labels),
        image=_opt(spec, "image"),
        command=_opt(spec, "command"),
        arguments=list(spec.arguments),
        environments={env.name: env.value for env in spec.environments},
        working_directory=_opt(spec, "working_directory"),
        max_instances=_opt(spec, "max_instances"),
        delay_release=_opt(spec, "delay_release"),
        schema=schema,
        url=_opt(spec, "url"),
        installer=_opt(spec, "installer"),
    )


def _session_spec(request: Any) -> st.SessionSpec | None:
    if not request.HasField("session"):
        return None
    spec = request.session
    resreq = None
    if spec.HasField("resreq"):
        resreq = (spec.resreq.cpu, spec.resreq.memory, spec.resreq.gpu)
    return st.SessionSpec(
        application=spec.application,
        common_data=_opt(spec, "common_data"),
        min_instances=spec.min_instances,
        max_instances=_opt(spec, "max_instances"),
        batch_size=spec.batch_size,
        priority=spec.priority,
        resreq=resreq,
    )


# -- state → pb ---------------------------------------------------------------------------------


def _resreq(value: tuple[int, int, int]) -> Any:
    return pb.ResourceRequirement(cpu=value[0], memory=value[1], gpu=value[2])


def _events(events: list[st.EventRecord]) -> list[Any]:
    # The message is always present on the wire, "" when empty (upstream's event stores).
    return [pb.Event(code=e.code, message=e.message, creation_time=e.creation_time) for e in events]


def app_to_pb(app: st.AppRecord) -> Any:
    """Convert an application record to ``pb.Application``; defaults are always present."""
    spec = pb.ApplicationSpec(
        shim=app.shim,
        description=app.description,
        labels=app.labels,
        image=app.image,
        command=app.command,
        arguments=app.arguments,
        environments=[pb.Environment(name=k, value=v) for k, v in app.environments.items()],
        working_directory=app.working_directory,
        max_instances=app.max_instances,
        delay_release=app.delay_release,
        url=app.url,
        installer=app.installer,
    )
    if app.has_schema:
        spec.schema.CopyFrom(
            pb.ApplicationSchema(
                input=app.schema_input, output=app.schema_output, common_data=app.schema_common_data
            )
        )
    return pb.Application(
        metadata=pb.Metadata(id=app.name, name=app.name),
        spec=spec,
        status=pb.ApplicationStatus(state=app.state, creation_time=app.creation_time),
    )


def session_to_pb(ssn: st.SessionRecord) -> Any:
    """Convert a session record to ``pb.Session`` (its events as the record carries them)."""
    return pb.Session(
        metadata=pb.Metadata(id=ssn.id, name=ssn.id),
        spec=pb.SessionSpec(
            application=ssn.application,
            common_data=ssn.common_data,
            min_instances=ssn.min_instances,
            max_instances=ssn.max_instances,
            batch_size=ssn.batch_size,
            priority=ssn.priority,
            resreq=_resreq(ssn.resreq),
        ),
        status=pb.SessionStatus(
            state=ssn.state,
            creation_time=ssn.creation_time,
            completion_time=ssn.completion_time,
            pending=ssn.pending,
            running=ssn.running,
            succeed=ssn.succeed,
            failed=ssn.failed,
            cancelled=ssn.cancelled,
            events=_events(ssn.events),
        ),
    )


def task_to_pb(task: st.TaskRecord) -> Any:
    """Convert a task record to ``pb.Task``; ids travel as decimal strings."""
    tid = str(task.id)
    return pb.Task(
        metadata=pb.Metadata(id=tid, name=tid),
        spec=pb.TaskSpec(session_id=task.session_id, input=task.input, output=task.output),
        status=pb.TaskStatus(
            state=task.state,
            creation_time=task.creation_time,
            completion_time=task.completion_time,
            events=_events(task.events),
        ),
    )


def _executor_to_pb(rec: st.ExecutorRecord) -> Any:
    return pb.Executor(
        metadata=pb.Metadata(id=rec.id, name=rec.id),
        spec=pb.ExecutorSpec(node=rec.node, resreq=_resreq(rec.resreq), shim=pb.Host),
        status=pb.ExecutorStatus(state=rec.state, session_id=rec.session_id),
    )


def _node_to_pb(node: st.NodeRecord) -> Any:
    # addresses stay empty and last_heartbeat_time 0, as upstream reports them.
    return pb.Node(
        metadata=pb.Metadata(id=node.name, name=node.name),
        spec=pb.NodeSpec(hostname=node.name),
        status=pb.NodeStatus(
            state=node.state,
            capacity=_resreq(node.capacity),
            allocatable=_resreq(node.allocatable),
            info=pb.NodeInfo(arch=node.arch, os=node.os),
        ),
    )


class FrontendServicer:
    """The ``flame.v1.Frontend`` service; register with ``rpc.generic_handler(pb.FRONTEND_SERVICE, ...)``.

    Args:
        state: the cluster state this service reads and changes.
    """

    def __init__(self, state: ClusterState) -> None:
        self._state = state

    # -- applications ---------------------------------------------------------------------------

    def RegisterApplication(self, request: Any, context: grpc.ServicerContext) -> Any:
        """Register an application; refusals past the pre-checks come back as ``Result{-1}``."""
        return _result(context, lambda: self._state.register_application(request.name, _app_spec(request)))

    def UnregisterApplication(self, request: Any, context: grpc.ServicerContext) -> Any:
        """Unregister an application (``Result{-1}`` on refusal)."""
        return _result(context, lambda: self._state.unregister_application(request.name))

    def UpdateApplication(self, request: Any, context: grpc.ServicerContext) -> Any:
        """Update an application (``Result{-1}`` on refusal past the pre-checks)."""
        return _result(context, lambda: self._state.update_application(request.name, _app_spec(request)))

    def GetApplication(self, request: Any, context: grpc.ServicerContext) -> Any:
        """Return one application, or NOT_FOUND."""
        return app_to_pb(_call(context, lambda: self._state.get_application(request.name)))

    def ListApplication(self, request: Any, context: grpc.ServicerContext) -> Any:
        """Return every application."""
        return pb.ApplicationList(applications=[app_to_pb(a) for a in self._state.list_applications()])

    # -- nodes and executors --------------------------------------------------------------------

    def ListExecutor(self, request: Any, context: grpc.ServicerContext) -> Any:
        """Return every executor of the fake's node."""
        return pb.ExecutorList(executors=[_executor_to_pb(e) for e in self._state.executors()])

    def ListNodes(self, request: Any, context: grpc.ServicerContext) -> Any:
        """Return the fake's node."""
        return pb.NodeList(nodes=[_node_to_pb(n) for n in self._state.nodes()])

    def GetNode(self, request: Any, context: grpc.ServicerContext) -> Any:
        """Return one node, or NOT_FOUND."""
        node = _call(context, lambda: self._state.get_node(request.name))
        return pb.GetNodeResponse(node=_node_to_pb(node))

    # -- sessions -------------------------------------------------------------------------------

    def CreateSession(self, request: Any, context: grpc.ServicerContext) -> Any:
        """Create a session (batch alignment checked first; resreq resolved, batch_size max(B, 1))."""
        spec = _session_spec(request)
        return session_to_pb(_call(context, lambda: self._state.create_session(request.session_id, spec)))

    def DeleteSession(self, request: Any, context: grpc.ServicerContext) -> Any:
        """Delete a closed session whose tasks are all terminal."""
        return session_to_pb(_call(context, lambda: self._state.delete_session(request.session_id)))

    def OpenSession(self, request: Any, context: grpc.ServicerContext) -> Any:
        """Get an open session (checking the spec if given) or create it from the spec."""
        spec = _session_spec(request)
        return session_to_pb(_call(context, lambda: self._state.open_session(request.session_id, spec)))

    def CloseSession(self, request: Any, context: grpc.ServicerContext) -> Any:
        """Close a session, cancelling its pending tasks."""
        return session_to_pb(_call(context, lambda: self._state.close_session(request.session_id)))

    def GetSession(self, request: Any, context: grpc.ServicerContext) -> Any:
        """Return one session with its session-level events."""
        return session_to_pb(_call(context, lambda: self._state.get_session(request.session_id)))

    def ListSession(self, request: Any, context: grpc.ServicerContext) -> Any:
        """Return every session, closed ones included."""
        return pb.SessionList(sessions=[session_to_pb(s) for s in self._state.list_sessions()])

    # -- tasks ----------------------------------------------------------------------------------

    def CreateTask(self, request: Any, context: grpc.ServicerContext) -> Any:
        """Create a task; ``spec.output`` in the request is ignored, as upstream does."""
        if not request.HasField("task"):
            _abort(context, StateError("INVALID_ARGUMENT", msgs.SESSION_SPEC_MISSING))
        spec = request.task
        data = spec.input if spec.HasField("input") else None
        return task_to_pb(_call(context, lambda: self._state.create_task(spec.session_id, data)))

    def GetTask(self, request: Any, context: grpc.ServicerContext) -> Any:
        """Return one task with its full event list."""
        return task_to_pb(_call(context, lambda: self._state.get_task(request.session_id, request.task_id)))

    def WatchTask(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        """Stream the task's state changes until a terminal one (see ``ClusterState.watch_task``)."""
        session_id = request.session_id
        updates = _call(
            context, lambda: self._state.watch_task(session_id, request.task_id, active=context.is_active)
        )
        # A client that goes away must not keep a server thread: wake the watcher to notice it.
        context.add_callback(lambda: self._state.wake_watchers(session_id, request.task_id))
        last = None
        for last in updates:
            yield task_to_pb(last)
        if self._state.stopped and (last is None or last.state not in TERMINAL_TASK_STATES):
            # The watch was cut by shutdown, not by the task: say so, as a real server going away
            # would (UNAVAILABLE), so a client's future fails instead of waiting forever.
            _abort(context, StateError("UNAVAILABLE", msgs.SERVER_STOPPING))

    def ListTask(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        """Stream every task of the session once."""
        tasks = _call(context, lambda: self._state.list_tasks(request.session_id))
        for task in tasks:
            yield task_to_pb(task)
