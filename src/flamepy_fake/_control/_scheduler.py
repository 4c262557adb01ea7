"""The fake cluster's scheduler: decides when a session gets executors, as Flame v0.6.0 does.

Each cycle asks :func:`flamepy_fake._control._policies.plan_cycle` which sessions are underused under the
cluster's ``policies`` (default ``[priority, gang]``, upstream's CI setting) and creates their
grants: whole gangs of ``batch_size`` executors, created at once and bound to their session. So
with ``batch_size=2`` a lone task stays Pending until a second one arrives (or
``min_instances >= 2``), as on a real v0.6.0 cluster. Where v0.6.0 adds at most one gang per
session per 100 ms cycle, the fake repeats cycles back to back until nothing changes, so a burst
of tasks gets its executors at once (a task that submits tasks to its own session and waits for
them gets the extra instances it needs). Tasks are still pulled one at a time by each executor,
and each executor leaves on its own after ``delay_release``.

v0.6.0 has no executor cap (``limits.max_executors`` is never read): the count follows the
priority policy's share of the node's capacity. ``max_executors`` is the fake's own optional
safety cap on live instances (``None``, the default, means none): beyond it sessions wait in
demand order, a gang that does not fit waits whole, and idle bound executors of sessions with
nothing pending are unbound early so waiting sessions are not stuck behind their
``delay_release``.

Sessions of ``Wasm`` apps are never given executors (their tasks stay Pending). After a bind
failure a session gets one probe gang at a time, after an exponential back-off; the state stops
offering the session once its retry limit is reached (event 1002).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable

from flamepy_runner._for_fake import pb

from ._policies import DEFAULT_POLICIES, check_policies, plan_cycle
from ._state import ClusterState, SessionDemand, StateError

__all__ = ["Scheduler"]

logger = logging.getLogger(__name__)

_IDLE_POLL = 1.0  # seconds between cycles when nothing changes (back-off timers, reclaiming)
_BACKOFF_MAX = 10.0
_COALESCE = 0.002  # seconds a cycle waits for further changes before running
_MAX_ROUNDS = 10_000  # planning rounds per cycle; each creates at least one executor


@dataclasses.dataclass
class _Failures:
    count: int = 0
    next_try: float = 0.0


class Scheduler:
    """Creates executors for sessions that need them; one background thread.

    Args:
        state: the cluster state.
        spawn: called with each new executor's (session demand, executor id) after the executor
            record exists; it must start the executor and return at once.
        live: returns how many instances are alive (including ones tearing down).
        executors_for: how a session's app runs (``"thread"``/``"process"``), for its records.
        max_executors: the fake's optional cap on live instances (``None``: no cap, as v0.6.0).
        policies: v0.6.0's scheduling policies (see :func:`~flamepy_fake._control._policies.check_policies`).
        retry_backoff: seconds before the first retry after a bind failure (doubles each time).
        clock: monotonic seconds for the back-off timers (tests pass a controllable one).
    """

    def __init__(
        self,
        state: ClusterState,
        *,
        spawn: Callable[[SessionDemand, str], None],
        live: Callable[[], int],
        executors_for: Callable[[SessionDemand], str],
        max_executors: int | None = None,
        policies: tuple[str, ...] = DEFAULT_POLICIES,
        retry_backoff: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_executors is not None and max_executors < 1:
            raise ValueError(f"max_executors must be at least 1, got {max_executors}")
        self.policies = check_policies(policies)
        self._state = state
        self._spawn = spawn
        self._live = live
        self._executors_for = executors_for
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
        """Run planning rounds until no session gets another gang.

        Returns:
            Seconds until a cycle is needed even if nothing changes.
        """
        next_wake = _IDLE_POLL
        for _ in range(_MAX_ROUNDS):
            created, starved, wake = self._round()
            next_wake = min(next_wake, wake)
            if not created:
                break
        if starved:
            self._reclaim_idle(self._state.demand())
        return max(next_wake, 0.01)

    def _round(self) -> tuple[bool, bool, float]:
        """One v0.6.0 cycle: grant gangs. Returns (created any, starved by the cap, next wake)."""
        demands = self._state.demand()
        live = self._live()
        next_wake = _IDLE_POLL
        now = self._clock()
        created = starved = False
        known = {d.session_id for d in demands}
        with self._lock:
            for gone in [s for s in self._failures if s not in known]:
                del self._failures[gone]
            for gone in [s for s in self._probing if s not in known]:
                del self._probing[gone]
        node = self._state.nodes()[0]
        grants = plan_cycle(
            demands, capacity=node.capacity, allocatable=node.allocatable, policies=self.policies
        )
        for grant in grants:
            demand = grant.demand
            if demand.app.shim == pb.Wasm:
                continue
            with self._lock:
                fail = self._failures.get(demand.session_id)
                if fail is not None:
                    if now < fail.next_try:
                        next_wake = min(next_wake, fail.next_try - now)
                        continue
                    if self._probing.get(demand.session_id, 0) > 0:
                        continue
            if self.max_executors is not None and live + grant.count > self.max_executors:
                starved = starved or demand.pending > 0
                continue  # a gang is created whole or not at all
            if self._create(demand, grant.count, probing=fail is not None):
                live += grant.count
                created = True
        return created, starved, next_wake

    def _create(self, demand: SessionDemand, count: int, *, probing: bool) -> bool:
        """Create one gang of ``count`` executors for the session and start them."""
        try:
            gang = self._state.create_executors(
                demand.session_id, count, executors=self._executors_for(demand)
            )
        except StateError:
            return False  # closed meanwhile
        if probing:
            with self._lock:
                self._probing[demand.session_id] = self._probing.get(demand.session_id, 0) + count
        for rec in gang:
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
