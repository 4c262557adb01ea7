"""Task completion for many outstanding tasks on one thread: multiplexed ``WatchTask`` streams.

flamepy gives every submitted task a thread of a 10-thread pool that blocks on that task's
``WatchTask`` stream, so the 11th outstanding task is not even watched until one of the first
ten finishes. :class:`TaskWatcher` instead runs one asyncio event loop on one thread with one
``grpc.aio`` channel, and keeps at most ``window`` streams open for a Runner however many tasks
are outstanding:

* tasks wait in a per-session queue in submission order; a free slot goes to the oldest queued
  task of the next session in turn (round robin, so one busy session cannot starve another);
  a session manager runs a session's tasks in submission order, so the oldest tasks are the
  ones about to finish;
* a task that finishes while it is still queued (a cluster that runs out of order, or more
  instances than slots) is found by a sweep of its session, which runs only when a session has
  made no progress for ``sweep_interval`` seconds: a ``GetSession``, then a ``ListTask`` only if
  the session's counts show more tasks ended than the watcher saw end (a session stalled by
  slow instance starts is not listed every second, which on a real cluster loads the session
  manager with every task of it);
* the same sweep reads the session's events: once a session has event 1002 (retry limit
  reached: no executor will be assigned) and nothing running, its tasks fail with the last bind
  failure instead of waiting forever;
* every stream has a deadline (``stream_timeout``): a task that runs longer is simply watched
  again, and a stream cut by the server (UNAVAILABLE) is retried a few times with back-off;
  a stream that ends without a terminal state is watched again after a ``GetTask``, pausing
  50 ms more for each such stream in a row that sent nothing (at most 1 s).

Completion is reported through a callback ``on_done(task, error)`` called on the watcher's
thread with the terminal ``flame.v1.Task`` (events filled by ``GetTask`` for failed tasks, since
watch messages from a real cluster carry none) or with the error that ended the watch.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

import grpc
import grpc.aio

from ._exceptions import FlameError, InvalidStateError, NotFoundError, UsageError
from ._frontend import FrontendClient, rpc_errors
from ._proto import pb, rpc

__all__ = ["BIND_FAILED_EVENT", "RETRY_LIMIT_EVENT", "TaskWatcher", "task_error_message"]

logger = logging.getLogger(__name__)

#: Session event codes (owner task 0) of a failed bind and of the retry limit.
BIND_FAILED_EVENT = 1001
RETRY_LIMIT_EVENT = 1002
_TERMINAL = frozenset(
    {pb.TaskState.Value("Succeed"), pb.TaskState.Value("Failed"), pb.TaskState.Value("Cancelled")}
)
_UNAVAILABLE_RETRIES = 3
# Seconds before re-watching after the n-th stream in a row that ended empty (n times this, at
# most 1 s): a server cutting every watch at once costs a few calls a second, not hundreds.
_EMPTY_STREAM_BACKOFF = 0.05

OnDone = Callable[[Any, BaseException | None], None]


class _WatchLoop(asyncio.SelectorEventLoop):
    """The watcher's event loop; once closed, it drops what other threads still hand it.

    grpc.aio reads the completions of every call in the process from one poller, and whichever
    loop reads them hands each to its call's loop with ``call_soon_threadsafe``. A call that
    :meth:`TaskWatcher.close` cancelled can complete after this loop is closed; the stock loop
    then raises ``RuntimeError``, which the other Runner's loop logs as an asyncio error. The call
    is gone, so its completion has nothing left to do.

    Only once :meth:`TaskWatcher.close` has begun (``closing``): a loop that ended any other way
    keeps the stock error, so that a caller handing it work fails at once instead of waiting
    for an answer that never comes.
    """

    closing = False

    # The stub's signature needs TypeVarTuple (Python 3.11); this one accepts the same calls.
    def call_soon_threadsafe(  # type: ignore[override]
        self, callback: Callable[..., object], *args: Any, context: contextvars.Context | None = None
    ) -> asyncio.Handle:
        try:
            return super().call_soon_threadsafe(callback, *args, context=context)
        except RuntimeError:
            if not (self.closing and self.is_closed()):
                raise
            dropped = asyncio.Handle(callback, args, self, context)
            dropped.cancel()
            return dropped


@dataclasses.dataclass
class _Tracked:
    session_id: str
    task_id: str
    on_done: OnDone
    done: bool = False
    watch: asyncio.Task[None] | None = None


@dataclasses.dataclass
class _Session:
    queue: collections.deque[_Tracked] = dataclasses.field(default_factory=collections.deque)
    active: dict[str, _Tracked] = dataclasses.field(default_factory=dict)
    last_progress: float = dataclasses.field(default_factory=time.monotonic)
    sweeping: bool = False


class TaskWatcher:
    """Reports the completion of tracked tasks, with a bounded number of threads and streams.

    Args:
        frontend: the session manager's client (its endpoint, TLS settings and deadline).
        window: most ``WatchTask`` streams open at once.
        sweep_interval: seconds without progress in a session before it is swept.
        stream_timeout: deadline of one ``WatchTask`` stream; a longer task is watched again.
    """

    def __init__(
        self,
        frontend: FrontendClient,
        *,
        window: int = 64,
        sweep_interval: float = 1.0,
        stream_timeout: float = 300.0,
    ) -> None:
        if window < 1:
            raise UsageError(f"window must be at least 1, got {window}")
        self._frontend = frontend
        self._window = window
        self._sweep_interval = sweep_interval
        self._stream_timeout = stream_timeout
        self._sessions: dict[str, _Session] = {}
        # Tasks seen ending on the server, by session (kept while the session's watch comes
        # and goes): what a sweep compares with the session's own counts.
        self._ended: collections.Counter[str] = collections.Counter()
        self._turn: collections.deque[str] = collections.deque()
        self._open_streams = 0
        self._peak_streams = 0
        self._closed = False
        self._lock = threading.Lock()
        self._loop = _WatchLoop()
        self._ready = threading.Event()
        self._channel: grpc.aio.Channel | None = None
        self._stub: Any = None
        self._thread = threading.Thread(target=self._run, name="flamepy-runner-watch", daemon=True)
        self._thread.start()
        self._ready.wait()

    # -- public, any thread ------------------------------------------------------------------------

    @property
    def peak_streams(self) -> int:
        """The most ``WatchTask`` streams that were open at once (for tests and benchmarks)."""
        return self._peak_streams

    def open_watches(self) -> int:
        """How many ``WatchTask`` streams are running now (asked of the loop; for tests)."""

        async def count() -> int:
            names = [getattr(t.get_coro(), "__qualname__", "") for t in asyncio.all_tasks()]
            return names.count("TaskWatcher._watch")

        return asyncio.run_coroutine_threadsafe(count(), self._loop).result(10)

    def track(self, session_id: str, task_id: str, on_done: OnDone) -> None:
        """Watch the task and call ``on_done(task, error)`` once when it ends.

        Raises:
            UsageError: the watcher is closed.
        """
        with self._lock:
            if self._closed:
                raise UsageError(
                    f"cannot watch task {task_id} of session '{session_id}': the watcher is closed"
                )
            self._loop.call_soon_threadsafe(self._enqueue, _Tracked(session_id, task_id, on_done))

    def forget_session(self, session_id: str, error: BaseException) -> None:
        """Fail every still-tracked task of the session with ``error`` (its session is gone)."""
        with self._lock:
            if not self._closed:
                self._loop.call_soon_threadsafe(self._fail_session, session_id, error)

    def close(self, error: BaseException | None = None) -> None:
        """Stop watching: tasks still tracked fail with ``error`` (idempotent; joins the thread)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self._loop.is_closed():  # its thread ended on its own: nothing to shut down
            self._thread.join(timeout=10)
            return
        reason = error or UsageError("the Runner was closed before the task finished")
        self._loop.closing = True
        fut = asyncio.run_coroutine_threadsafe(self._shutdown(reason), self._loop)
        with contextlib.suppress(Exception):
            fut.result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    # -- the loop thread -------------------------------------------------------------------------

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._start())
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            with contextlib.suppress(Exception):
                self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()

    async def _start(self) -> None:
        creds = self._frontend.credentials()
        target = self._frontend.target
        self._channel = (
            grpc.aio.insecure_channel(target) if creds is None else grpc.aio.secure_channel(target, creds)
        )
        self._stub = rpc.Stub(self._channel, pb.FRONTEND_SERVICE)
        self._sweeper = self._loop.create_task(self._sweep_forever())

    async def _shutdown(self, error: BaseException) -> None:
        self._sweeper.cancel()
        for session_id in list(self._sessions):
            self._fail_session(session_id, error)
        pending = [t for t in asyncio.all_tasks(self._loop) if t is not asyncio.current_task()]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if self._channel is not None:
            await self._channel.close()

    def _enqueue(self, tracked: _Tracked) -> None:
        session = self._sessions.get(tracked.session_id)
        if session is None:
            session = self._sessions[tracked.session_id] = _Session()
            self._turn.append(tracked.session_id)
        session.queue.append(tracked)
        self._fill()

    def _fill(self) -> None:
        """Give free stream slots to the oldest queued task of each session, in turn."""
        idle = 0
        while self._open_streams < self._window and self._turn and idle < len(self._turn):
            session_id = self._turn[0]
            self._turn.rotate(-1)
            session = self._sessions[session_id]
            while session.queue and session.queue[0].done:
                session.queue.popleft()
            if not session.queue:
                idle += 1
                continue
            idle = 0
            tracked = session.queue.popleft()
            session.active[tracked.task_id] = tracked
            self._open_streams += 1
            self._peak_streams = max(self._peak_streams, self._open_streams)
            tracked.watch = self._spawn(self._watch(tracked))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        return self._loop.create_task(coro)

    def _finish(self, tracked: _Tracked, task: Any, error: BaseException | None) -> None:
        if tracked.done:
            return
        tracked.done = True
        if task is not None:  # ended on the server (a local error may leave it running there)
            self._ended[tracked.session_id] += 1
        if tracked.watch is not None and tracked.watch is not asyncio.current_task():
            tracked.watch.cancel()  # finished from outside (a failed session): free its stream now
        session = self._sessions.get(tracked.session_id)
        if session is not None:
            session.last_progress = time.monotonic()
            if session.active.pop(tracked.task_id, None) is not None:
                self._open_streams -= 1
            if not session.queue and not session.active:
                del self._sessions[tracked.session_id]
                with contextlib.suppress(ValueError):
                    self._turn.remove(tracked.session_id)
        try:
            tracked.on_done(task, error)
        except Exception:  # a callback's failure must not stop the watcher
            logger.exception("completion callback of task %s failed", tracked.task_id)
        self._fill()

    def _fail_session(self, session_id: str, error: BaseException) -> None:
        session = self._sessions.get(session_id)
        if session is None:
            return
        for tracked in [*session.active.values(), *session.queue]:
            self._finish(tracked, None, error)

    async def _watch(self, tracked: _Tracked) -> None:
        try:
            task = await self._terminal_task(tracked)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # reported to the future, never lost
            self._finish(tracked, None, exc)
            return
        self._finish(tracked, task, None)

    async def _terminal_task(self, tracked: _Tracked) -> Any:
        request = pb.WatchTaskRequest(session_id=tracked.session_id, task_id=tracked.task_id)
        what = f"cannot watch task {tracked.task_id} of session '{tracked.session_id}'"
        unavailable = 0
        empty = 0  # streams in a row that ended with no message and no terminal state
        while not tracked.done:
            last = None
            with rpc_errors(what, self._frontend.endpoint, session_id=tracked.session_id):
                try:
                    async for update in self._stub.WatchTask(request, timeout=self._stream_timeout):
                        last = update
                        self._progress(tracked.session_id)
                        if update.status.state in _TERMINAL:
                            break
                except grpc.aio.AioRpcError as exc:
                    if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                        continue  # a long task: watch it again
                    if exc.code() == grpc.StatusCode.UNAVAILABLE and unavailable < _UNAVAILABLE_RETRIES:
                        unavailable += 1
                        await asyncio.sleep(0.2 * unavailable)
                        continue
                    raise
            if last is not None and last.status.state in _TERMINAL:
                if last.status.state == pb.TaskState.Value("Succeed"):
                    return last
                return await self._get_task(tracked)
            # The stream ended without a terminal state: the session or task is gone, or the
            # server cut the stream. GetTask tells which.
            current = await self._get_task(tracked)
            if current.status.state in _TERMINAL:
                return current
            # A server that keeps ending streams at once must not make this a busy loop.
            empty = empty + 1 if last is None else 0
            if empty:
                await asyncio.sleep(min(_EMPTY_STREAM_BACKOFF * empty, 1.0))
        return None

    async def _get_task(self, tracked: _Tracked) -> Any:
        request = pb.GetTaskRequest(session_id=tracked.session_id, task_id=tracked.task_id)
        what = f"cannot get task {tracked.task_id} of session '{tracked.session_id}'"
        with rpc_errors(
            what, self._frontend.endpoint, session_id=tracked.session_id, task_id=tracked.task_id
        ):
            try:
                return await self._stub.GetTask(request, timeout=self._frontend.config.timeout)
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.NOT_FOUND:
                    raise NotFoundError(
                        f"task {tracked.task_id} of session '{tracked.session_id}' does not exist "
                        "(any more): the session was deleted or never had this task",
                        endpoint=self._frontend.endpoint,
                        session_id=tracked.session_id,
                        task_id=tracked.task_id,
                    ) from exc
                raise

    def _progress(self, session_id: str) -> None:
        session = self._sessions.get(session_id)
        if session is not None:
            session.last_progress = time.monotonic()

    # -- the sweep -------------------------------------------------------------------------------

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self._sweep_interval / 2)
            now = time.monotonic()
            for session_id, session in list(self._sessions.items()):
                if session.sweeping or now - session.last_progress < self._sweep_interval:
                    continue
                session.sweeping = True
                self._spawn(self._sweep(session_id, session))

    async def _sweep(self, session_id: str, session: _Session) -> None:
        try:
            ended = await self._check_session(session_id, session)
            # Only a task that ended unseen can be a queued one: else listing finds nothing.
            if session.queue and session_id in self._sessions and ended > self._ended[session_id]:
                await self._list_finished(session_id, session)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the watches report their own errors; a sweep only helps
            logger.debug("sweep of session %s failed: %s", session_id, exc)
        finally:
            session.sweeping = False
            session.last_progress = time.monotonic()

    async def _check_session(self, session_id: str, session: _Session) -> int:
        """Fail the session's tasks if it reached the retry limit; return how many of its tasks
        ended (succeeded, failed or cancelled), by the session manager's counts."""
        request = pb.GetSessionRequest(session_id=session_id)
        ssn = await self._stub.GetSession(request, timeout=self._frontend.config.timeout)
        status = ssn.status
        ended = int(status.succeed + status.failed + status.cancelled)
        events = list(status.events)
        if status.running > 0 or not any(e.code == RETRY_LIMIT_EVENT for e in events):
            return ended
        limit = [e for e in events if e.code == RETRY_LIMIT_EVENT][-1]
        binds = [e for e in events if e.code == BIND_FAILED_EVENT]
        text = (
            f"session '{session_id}' of application '{ssn.spec.application}' cannot run its tasks: "
            f"event {RETRY_LIMIT_EVENT}: {limit.message}"
        )
        if binds:
            text += f" Last bind failure (event {BIND_FAILED_EVENT}): {binds[-1].message}"
        self._fail_session(
            session_id, InvalidStateError(text, endpoint=self._frontend.endpoint, session_id=session_id)
        )
        return ended

    async def _list_finished(self, session_id: str, session: _Session) -> None:
        queued = {t.task_id: t for t in session.queue if not t.done}
        if not queued:
            return
        call = self._stub.ListTask(pb.ListTaskRequest(session_id=session_id), timeout=self._stream_timeout)
        finished: list[tuple[_Tracked, Any]] = []
        async for task in call:
            tracked = queued.get(task.metadata.id)
            if tracked is not None and task.status.state in _TERMINAL:
                finished.append((tracked, task))
        for tracked, task in finished:
            if task.status.state != pb.TaskState.Value("Succeed"):
                try:
                    task = await self._get_task(tracked)
                except FlameError as exc:
                    self._finish(tracked, None, exc)
                    continue
            self._finish(tracked, task, None)
        if finished:
            logger.debug("sweep of session %s found %d finished queued tasks", session_id, len(finished))


def task_error_message(task: Any) -> str:
    """The failure text of a failed or cancelled task: its last code-3 event, else a default."""
    failed = pb.TaskState.Value("Failed")
    messages = [e.message for e in task.status.events if e.code == failed and e.HasField("message")]
    if messages:
        return str(messages[-1])
    if task.status.state == failed:
        return "the task failed without an error message"
    return "the task was cancelled (its session was closed before it ran)"
