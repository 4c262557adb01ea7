"""The fake cluster's scheduler: decides when a session gets another executor.

For each Open session (in ``ClusterState.demand()`` order: priority desc, creation asc) the
wanted number of instances is ``pending + running``, at least ``min_instances`` (kept warm with
no tasks), at most ``max_instances``. New executors are created at once up to the cluster-wide
cap ``max_executors`` (not one per cycle as upstream), so a task that submits tasks to its own
session and waits for them gets the extra instances it needs. Beyond the cap, sessions wait in
demand order; idle bound executors of sessions with nothing pending are then unbound early so
waiting sessions are not stuck behind their ``delay_release``.

Sessions of ``Wasm`` apps are never scheduled (their tasks stay Pending). After a bind failure a
session gets one probe executor at a time, after an exponential back-off; the state stops
offering the session once its retry limit is reached (event 1002).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable

from flamepy_runner._proto import pb

from ._state import ClusterState, SessionDemand, StateError

__all__ = ["Scheduler"]

logger = logging.getLogger(__name__)

_IDLE_POLL = 1.0  # seconds between cycles when nothing changes (back-off timers, reclaiming)
_BACKOFF_MAX = 10.0
_COALESCE = 0.002  # seconds a cycle waits for further changes before running


@dataclasses.dataclass
class _Failures:
    count: int = 0
    next_try: float = 0.0


def wanted(demand: SessionDemand) -> int:
    """How many instances ``demand``'s session should have right now."""
    want = max(demand.pending + demand.running, demand.min_instances)
    if demand.max_instances is not None:
        want = min(want, demand.max_instances)
    return max(want, 0)


class Scheduler:
    """Creates executors for sessions that need them; one background thread.

    Args:
        state: the cluster state.
        spawn: called with each new executor's (session demand, executor id) after the executor
            record exists; it must start the executor and return at once.
        live: returns how many instances are alive (including ones tearing down).
        backend_for: the backend (``"thread"``/``"process"``) to record for a session's app.
        max_executors: the cluster-wide cap on instances.
        retry_backoff: seconds before the first retry after a bind failure (doubles each time).
        clock: monotonic seconds for the back-off timers (tests pass a controllable one).
    """

    def __init__(
        self,
        state: ClusterState,
        *,
        spawn: Callable[[SessionDemand, str], None],
        live: Callable[[], int],
        backend_for: Callable[[SessionDemand], str],
        max_executors: int = 10,
        retry_backoff: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_executors < 1:
            raise ValueError(f"max_executors must be at least 1, got {max_executors}")
        self._state = state
        self._spawn = spawn
        self._live = live
        self._backend_for = backend_for
        self.max_executors = max_executors
        self.retry_backoff = retry_backoff
        self._clock = clock
        self._lock = threading.Lock()
        self._failures: dict[str, _Failures] = {}
        self._probing: dict[str, int] = {}  # executors binding for sessions that failed before
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the scheduling thread."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, name="flamepy-fake-scheduler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the scheduling thread and wait for it."""
        self._stop.set()
        self._state.wake()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=10)

    # -- feedback from executors ----------------------------------------------------------------

    def bind_finished(self, session_id: str, ok: bool | None) -> None:
        """Record the outcome of a bind for ``session_id`` (drives the retry back-off).

        Call it before reporting the outcome to the state: the state change then starts the
        next cycle with the back-off already known.

        Args:
            session_id: the session the executor was created for.
            ok: True (bound), False (bind failed) or None (the executor ended before binding,
                e.g. the session closed or the cluster stopped).
        """
        with self._lock:
            if session_id in self._probing:
                self._probing[session_id] -= 1
                if self._probing[session_id] <= 0:
                    del self._probing[session_id]
            if ok is None:
                return
            if ok:
                self._failures.pop(session_id, None)
                return
            fail = self._failures.setdefault(session_id, _Failures())
            fail.count += 1
            delay = min(self.retry_backoff * (2 ** (fail.count - 1)), _BACKOFF_MAX)
            fail.next_try = self._clock() + delay

    # -- the loop -------------------------------------------------------------------------------

    def _loop(self) -> None:
        generation = -1
        while not self._stop.is_set() and not self._state.stopped:
            try:
                timeout = self.schedule_once()
            except Exception:  # never let the scheduler die: log and retry next cycle
                logger.exception("scheduling cycle failed")
                timeout = _IDLE_POLL
            generation = self._state.wait_for_change(generation, timeout)
            # Coalesce bursts: every task creation, launch and completion bumps the generation,
            # and one cycle per change would compete with the tasks for the GIL.
            self._stop.wait(_COALESCE)

    def schedule_once(self) -> float:
        """Run one scheduling cycle.

        Returns:
            Seconds until a cycle is needed even if nothing changes.
        """
        demands = self._state.demand()
        live = self._live()
        next_wake = _IDLE_POLL
        now = self._clock()
        starved = False
        known = {d.session_id for d in demands}
        with self._lock:
            for gone in [s for s in self._failures if s not in known]:
                del self._failures[gone]
            for gone in [s for s in self._probing if s not in known]:
                del self._probing[gone]
        for demand in demands:
            if demand.app.shim == pb.Wasm:
                continue
            need = wanted(demand) - demand.executors
            if need <= 0:
                continue
            with self._lock:
                fail = self._failures.get(demand.session_id)
                if fail is not None:
                    if now < fail.next_try:
                        next_wake = min(next_wake, fail.next_try - now)
                        continue
                    if self._probing.get(demand.session_id, 0) > 0:
                        continue
                    need = 1
            while need > 0:
                if live >= self.max_executors:
                    starved = starved or demand.pending > 0
                    break
                if not self._create(demand, probing=fail is not None):
                    break
                live += 1
                need -= 1
        if starved:
            self._reclaim_idle(demands)
        return max(next_wake, 0.01)

    def _create(self, demand: SessionDemand, *, probing: bool) -> bool:
        try:
            rec = self._state.create_executor(demand.session_id, backend=self._backend_for(demand))
        except StateError:
            return False  # closed meanwhile
        if probing:
            with self._lock:
                self._probing[demand.session_id] = self._probing.get(demand.session_id, 0) + 1
        self._spawn(demand, rec.id)
        return True

    def _reclaim_idle(self, demands: list[SessionDemand]) -> None:
        """Unbind idle executors of sessions with nothing pending, beyond their minimum."""
        by_session = {d.session_id: d for d in demands}
        spare: dict[str, int] = {}
        for d in demands:
            if d.pending == 0:
                spare[d.session_id] = d.executors - max(d.min_instances, d.running)
        for rec in self._state.executors():
            if rec.state != pb.ExecutorBound or rec.task_id is not None or rec.session_id is None:
                continue
            sid = rec.session_id
            if sid not in by_session or spare.get(sid, 0) <= 0:
                continue
            try:
                self._state.unbind_executor(rec.id)
            except StateError:
                continue
            spare[sid] -= 1
            self._state.wake(sid)
