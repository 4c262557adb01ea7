"""What the ``flame_cluster`` fixture reports at teardown: work a test left, what stop() left.

The texts of the leftover check (open sessions, unfinished tasks, abandoned thread instances),
of what a cluster's stop() failed to remove, and of a shared cluster's failed cleanup.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from .._cluster import FakeCluster
    from ._options import FlameOptions

__all__ = ["LEFT_BEHIND", "abandoned", "cleanup_warning", "left_behind", "leftovers"]


def leftovers(
    cluster: FakeCluster, options: FlameOptions, earlier: frozenset[str] = frozenset()
) -> list[str]:
    """The leftover lists for the sessions not in ``earlier`` (those of a shared cluster's past tests)."""
    from flamepy_runner._for_fake import pb

    state = cluster.state
    # By enum: the records keep flame.v1 values, and pb's flattened names (pb.Open) span enums.
    session_open = pb.SessionState.Value("Open")
    unfinished_states = (pb.TaskState.Value("Pending"), pb.TaskState.Value("Running"))
    open_sessions: list[str] = []
    unfinished: list[str] = []
    for ssn in state.list_sessions():
        if ssn.id in earlier:
            continue
        if ssn.state == session_open:
            open_sessions.append(
                f"  - {ssn.id} (application {ssn.application}: {ssn.pending} pending, "
                f"{ssn.running} running, {ssn.succeed} succeeded, {ssn.failed} failed)"
            )
        for task in state.list_tasks(ssn.id):
            if task.state in unfinished_states:
                unfinished.append(f"  - task {task.id} of session {ssn.id}: {pb.TaskState.Name(task.state)}")
    sections: list[str] = []
    if open_sessions and not options.allow_open_sessions:
        sections += [
            "Sessions still open (close them, or allow with @pytest.mark.flame(allow_open_sessions=True)):",
            *open_sessions,
        ]
    if unfinished and not options.allow_unfinished_tasks:
        sections += [
            "Tasks not finished (wait for them, "
            "or allow with @pytest.mark.flame(allow_unfinished_tasks=True)):",
            *unfinished,
        ]
    return sections


def abandoned(cluster: FakeCluster) -> list[str]:
    if not cluster.abandoned_instances:
        return []
    return [
        "Thread instances abandoned by stop() (a thread cannot be killed: its code keeps running "
        "in this process):",
        *(f"  - {entry.describe()}" for entry in cluster.abandoned_instances),
    ]


LEFT_BEHIND = "flame_cluster: left behind after stop() (a flamepy_fake bug, please report it):"


def left_behind(own_dir: Path, pids: list[int]) -> list[str]:
    """What the cluster itself failed to clean up in stop(): never the test's fault."""
    items = [f"- directory {own_dir}"] if own_dir.exists() else []
    for pid in pids:
        try:
            os.kill(pid, 0)  # succeeds for a live or an unreaped (zombie) child
        except ProcessLookupError:
            continue
        except PermissionError:  # the pid was reused by someone else's process
            continue
        items.append(f"- instance process {pid}")
    return items


def cleanup_warning(problems: list[str]) -> pytest.PytestWarning:
    return pytest.PytestWarning(
        "flame_cluster: could not remove what the test created on the shared cluster:\n"
        + "\n".join(f"  - {p}" for p in problems)
    )
