"""ObjectFuture: the result of a remote call, as a :class:`concurrent.futures.Future` of an ObjectRef.

Because :class:`ObjectFuture` *is* a ``concurrent.futures.Future`` (its result is the
:class:`~flamepy_runner.ObjectRef` of the task's output), ``concurrent.futures.wait`` and
``as_completed`` take it directly, ``asyncio.wrap_future`` adapts it, and ``await future`` in a
coroutine gives the concrete object. No thread waits on it: the Runner's task watcher completes
it when the task ends.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable, Generator
from typing import Any

from ._cache_wire import ObjectRef
from ._exceptions import RemoteError, WaitTimeoutError

__all__ = ["ObjectFuture"]


class ObjectFuture(concurrent.futures.Future[ObjectRef]):
    """The pending result of one remote call.

    Use :meth:`get` for the object, :meth:`ref` for its :class:`~flamepy_runner.ObjectRef`
    (pass either the future or the ref to another call: the executor fetches the object, the
    client never downloads and re-uploads it) and :meth:`wait` to wait without fetching.
    A failed call raises :class:`~flamepy_runner.RemoteError` from all three.

    Created by RunnerService calls; not meant to be built by hand.
    """

    def __init__(
        self,
        fetch: Callable[[ObjectFuture, ObjectRef], Any],
        *,
        application: str,
        session_id: str,
        task_id: str | None = None,
    ) -> None:
        super().__init__()
        # Running at once: a remote task cannot be cancelled through this object.
        self.set_running_or_notify_cancel()
        self._fetch = fetch
        self.application = application
        self.session_id = session_id
        self.task_id = task_id
        self._failure_id: str | None = None  # where the envelope records a failure (_envelope)

    def __repr__(self) -> str:
        state = "done" if self.done() else "pending"
        return f"<ObjectFuture task {self.task_id} of session {self.session_id!r}: {state}>"

    def _wait_ref(self, timeout: float | None) -> ObjectRef:
        try:
            return self.result(timeout)
        except concurrent.futures.TimeoutError as exc:
            if isinstance(exc, RemoteError):  # the remote call raised a TimeoutError
                raise
            raise WaitTimeoutError(
                f"task {self.task_id} of session '{self.session_id}' did not finish within {timeout} s",
                session_id=self.session_id,
                task_id=self.task_id,
            ) from None

    def ref(self, timeout: float | None = None) -> ObjectRef:
        """Wait for the call and return the ObjectRef of its result.

        Args:
            timeout: seconds to wait; None waits as long as the task runs.

        Raises:
            RemoteError: the remote call raised.
            WaitTimeoutError: ``timeout`` passed first.
            FlameError: the task could not be run or watched (the message says why).
        """
        return self._wait_ref(timeout)

    def get(self, timeout: float | None = None) -> Any:
        """Wait for the call and fetch its result object from the cache.

        Args:
            timeout: seconds to wait for the task; None waits as long as it runs.

        Raises:
            RemoteError: the remote call raised.
            WaitTimeoutError: ``timeout`` passed first.
            FlameError: the task could not be run or watched, or the result not fetched.
        """
        return self._fetch(self, self._wait_ref(timeout))

    def wait(self, timeout: float | None = None) -> None:
        """Wait for the call without fetching its result (errors are raised as by :meth:`get`)."""
        self._wait_ref(timeout)

    def cancel(self) -> bool:
        """Remote tasks cannot be cancelled one by one: always False (close the service instead)."""
        return False

    def __await__(self) -> Generator[Any, None, Any]:
        """``await future`` in a coroutine: waits without blocking the loop, then fetches the object."""
        ref = yield from asyncio.wrap_future(self).__await__()
        loop = asyncio.get_running_loop()
        return (yield from loop.run_in_executor(None, self._fetch, self, ref).__await__())
