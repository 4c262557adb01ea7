"""Failure report sections: what a failed test's report says about its fake cluster.

:func:`failure_sections` returns, for a running cluster, one section per session that could not
start an instance (events 1001/1002 and each distinct stderr of its instances, once, with the
executors that wrote it), then one section with the cluster's state: applications, sessions with
task counts, failed tasks with their messages, executors, the last calls and the stderr tails of
the other instances that wrote some. The pytest plugin appends them to the report of a test that
failed (or timed out).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ._calls import CallLog, CallRecord
    from ._introspect import AppInfo, ExecutorInfo, SessionInfo, TaskInfo

__all__ = ["STATE_TITLE", "ReportedCluster", "failure_sections"]

#: The title of the cluster state section.
STATE_TITLE = "flame_cluster: state of the fake Flame cluster when the test failed"
BIND_EVENTS = (1001, 1002)  # SESSION_BIND_FAILED, SESSION_RETRY_LIMIT_REACHED
STDERR_LINES = 20  # the tail of an instance's stderr shown
LAST_CALLS = 20  # the calls shown
MAX_ITEMS = 20  # failed tasks and executors shown


class ReportedCluster(Protocol):
    """What a report reads of a cluster: ``FakeCluster``'s toolkit (named here, so this module
    stays below the cluster it reports on)."""

    @property
    def calls(self) -> CallLog: ...

    def applications(self) -> list[AppInfo]: ...

    def sessions(self) -> list[SessionInfo]: ...

    def tasks(self, session_id: str) -> list[TaskInfo]: ...

    def executors(self) -> list[ExecutorInfo]: ...

    def executors_of(self, session_id: str) -> list[str]: ...

    def instance_logs(self, executor_id: str) -> str: ...


def failure_sections(cluster: ReportedCluster) -> list[tuple[str, str]]:
    """Report sections ``(title, text)`` for a failed test that used ``cluster`` (running)."""
    shown: set[str] = set()
    sections = _bind_failures(cluster, shown)
    sections.append((STATE_TITLE, "\n".join(_state_lines(cluster, shown))))
    return sections


def _bind_failures(cluster: ReportedCluster, shown: set[str]) -> list[tuple[str, str]]:
    """Sections for sessions that got event 1001/1002: the events, each distinct stderr once."""
    sections = []
    for ssn in cluster.sessions():
        events = [e for e in ssn.events if e.code in BIND_EVENTS]
        if not events:
            continue
        lines = [f"event {e.code}: {e.message}" for e in events]
        executor_ids = cluster.executors_of(ssn.id)
        shown.update(executor_ids)
        lines += _stderr_lines(cluster, executor_ids, "")
        sections.append((f"flame_cluster: session {ssn.id} could not start an instance", "\n".join(lines)))
    return sections


def _stderr_lines(cluster: ReportedCluster, executor_ids: list[str], where: str) -> list[str]:
    """The stderr tails of ``executor_ids``, each distinct one once with the executors that wrote
    it: five failed binds of one broken import print one traceback, not five."""
    groups: dict[tuple[str, ...], list[str]] = {}
    for eid in executor_ids:
        tail = tuple(_stderr_tail(cluster, eid))
        if tail:
            groups.setdefault(tail, []).append(eid)
    lines = []
    for tail, eids in groups.items():
        if len(eids) == 1:
            lines.append(f"stderr of executor {eids[0]}{where} (last {STDERR_LINES} lines):")
        else:
            lines.append(
                f"stderr of {len(eids)} executors{where}, the same each time: {', '.join(eids)} "
                f"(last {STDERR_LINES} lines):"
            )
        lines += [f"  {line}" for line in tail]
    return lines


def _state_lines(cluster: ReportedCluster, shown: set[str]) -> list[str]:
    lines = ["Applications: " + ", ".join(a.name for a in cluster.applications())]
    sessions = cluster.sessions()
    lines.append("Sessions:" if sessions else "Sessions: none")
    failed: list[str] = []
    for s in sessions:
        lines.append(
            f"  - {s.id} (application {s.application}, {s.state.value}: {s.pending} pending, "
            f"{s.running} running, {s.succeeded} succeeded, {s.failed} failed, {s.cancelled} cancelled)"
        )
        if s.failed:
            failed += [
                f"  - task {t.id} of session {s.id}: {t.message}"
                for t in cluster.tasks(s.id)
                if t.state.value == "failed"
            ]
    if failed:
        lines.append("Failed tasks:")
        lines += _bounded(failed)
    executors = cluster.executors()
    lines.append("Executors:" if executors else "Executors: none")
    lines += _bounded(
        [
            f"  - {e.id} {e.state.value} ({e.executors}"
            + (f", pid {e.pid}" if e.pid else "")
            + f"): session {e.session} of {e.app}"
            + (f", running task {e.task_id}" if e.task_id is not None else "")
            for e in executors
        ]
    )
    calls = cluster.calls.snapshot()
    last = calls[-LAST_CALLS:]
    lines.append(f"Last {len(last)} of {len(calls)} calls:" if calls else "Calls: none")
    lines += [f"  - {_call_line(c)}" for c in last]
    for s in sessions:
        unshown = [eid for eid in cluster.executors_of(s.id) if eid not in shown]
        lines += _stderr_lines(cluster, unshown, f" of session {s.id}")
    return lines


def _call_line(call: CallRecord) -> str:
    keys = [
        f"{name}={value}"
        for name, value in (
            ("app", call.app),
            ("session", call.session_id),
            ("task", call.task_id),
            ("key", call.key),
        )
        if value is not None
    ]
    args = f" ({', '.join(keys)})" if keys else ""
    return f"#{call.seq} {call.service}/{call.method}{args}: {call.status} in {call.duration * 1000:.1f} ms"


def _bounded(items: list[str]) -> list[str]:
    if len(items) <= MAX_ITEMS:
        return items
    return [*items[:MAX_ITEMS], f"  ... and {len(items) - MAX_ITEMS} more"]


def _stderr_tail(cluster: ReportedCluster, executor_id: str) -> list[str]:
    logs = cluster.instance_logs(executor_id)
    marker = "--- stderr ---\n"  # the layout of FakeCluster.instance_logs()
    stderr = logs.split(marker, 1)[1] if marker in logs else ""
    return stderr.splitlines()[-STDERR_LINES:]
