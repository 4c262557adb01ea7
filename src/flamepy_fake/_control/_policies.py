"""Flame v0.6.0's scheduling policies (``priority``, ``drf``, ``gang``) as one pure planning step.

No threads and no state here: :func:`plan_cycle` takes a snapshot of the open sessions and the
node's capacity and says how many executors each session gets now. :mod:`flamepy_fake._control._scheduler`
applies it. The rules are v0.6.0's (``shared/reference/v0.6.0.md`` sections 2 and 3):

- **priority**: a session's demand is its unfinished tasks rounded *down* to whole batches,
  ``floor((pending + running) / B) * B``, clamped to ``max_instances`` then ``min_instances``.
  The cluster capacity is handed out per dimension (cpu, memory, gpu) in (priority desc,
  creation asc) order; a session is *underused* while the resources its executors hold are below
  what it was handed in any dimension. A session whose priority is below that of a session
  with pending tasks is never underused (so a needy higher priority blocks lower ones).
- **drf**, when enabled and priority has no opinion: a session with pending tasks (beyond those
  its idle executors are about to take) is underused while its dominant share is below
  ``1 / #sessions``; new executors must fit the node.
- **gang**: executors come in whole batches of B, topping the session up to the next multiple
  of B. Without ``gang`` v0.6.0 never creates an executor (an upstream defect), so
  :func:`check_policies` refuses such a list instead of copying it.

``max_executors`` is *not* a v0.6.0 limit (it is parsed and never read upstream); the fake's own
optional cap lives in the scheduler.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: the plugin imports this module (through the options)
    from ._records import ResReq, SessionDemand

__all__ = ["DEFAULT_POLICIES", "POLICY_NAMES", "Grant", "check_policies", "plan_cycle"]

#: Every policy v0.6.0 knows, in its registry order (the order it consults them in).
POLICY_NAMES: tuple[str, ...] = ("priority", "drf", "gang")
#: What upstream's official images, compose file and CI use (``ci/flame-cluster*.yaml``).
DEFAULT_POLICIES: tuple[str, ...] = ("priority", "gang")


def check_policies(policies: Iterable[str]) -> tuple[str, ...]:
    """Validate a ``policies`` list; return it canonical (registry order, no duplicates).

    Raises:
        ValueError: not a list of names, an unknown name (upstream's text), or a list with
            which v0.6.0 never runs a task (without ``gang``, or without ``priority`` and
            ``drf``); the message says why.
    """
    if isinstance(policies, (str, bytes)):
        raise ValueError(f"policies must be a list of names, e.g. ['priority', 'gang']; got {policies!r}")
    names = list(policies)
    for name in names:
        if name not in POLICY_NAMES:
            available = ", ".join(f'"{n}"' for n in POLICY_NAMES)
            raise ValueError(f"unknown policy: {name}. available: [{available}]")
    chosen = tuple(n for n in POLICY_NAMES if n in names)
    if "gang" not in chosen:
        raise ValueError(
            f"policies {list(names)} lack 'gang': with them Flame v0.6.0 never creates an executor "
            "and every task stays Pending forever (an upstream defect, xflops/flame#500), so the fake "
            "refuses them; use ['priority', 'gang'] (upstream's images and CI) or "
            "['priority', 'drf', 'gang'] (its built-in default)"
        )
    if chosen == ("gang",):
        raise ValueError(
            "policies ['gang'] alone never run a task on Flame v0.6.0 (no policy marks a session as "
            "needing executors), so the fake refuses them; add 'priority' or 'drf'"
        )
    return chosen


@dataclass(frozen=True)
class Grant:
    """One session's share of a cycle: ``count`` new executors (a whole gang, or its top-up)."""

    demand: SessionDemand
    count: int


def _batch(demand: SessionDemand) -> int:
    return max(demand.batch_size, 1)


def _target(demand: SessionDemand) -> int:
    """The priority policy's demand in executors: unfinished tasks in whole batches, clamped."""
    batch = _batch(demand)
    count = (demand.pending + demand.running) // batch * batch
    if demand.max_instances is not None:
        count = min(count, demand.max_instances)
    return max(count, demand.min_instances)


def _fits(count: int, unit: ResReq, allocatable: ResReq) -> bool:
    """drf's node fit: cpu and memory (and gpu when asked for) of ``count`` executors."""
    dims = (0, 1, 2) if unit[2] > 0 else (0, 1)
    return all(count * unit[d] <= allocatable[d] for d in dims)


def plan_cycle(
    demands: Sequence[SessionDemand], *, capacity: ResReq, allocatable: ResReq, policies: Sequence[str]
) -> list[Grant]:
    """Decide which sessions get a gang now, as one v0.6.0 scheduling cycle would.

    Args:
        demands: the open sessions below their retry limit, in (priority desc, creation asc)
            order, as :meth:`ClusterState.demand` returns them.
        capacity: the cluster's capacity (cpu, memory bytes, gpu): what priority hands out.
        allocatable: what is still free on the node (drf's fit check).
        policies: a list accepted by :func:`check_policies`.

    Returns:
        At most one grant per session, in ``demands`` order; each is a whole gang (or the
        top-up of a partial one) that the caller must create at once or not at all.
    """
    use_priority, use_drf = "priority" in policies, "drf" in policies
    needy = [d.priority for d in demands if d.pending > 0]
    top_needy = max(needy) if needy else None
    remaining = list(capacity)
    grants: list[Grant] = []
    free = list(allocatable)
    for demand in demands:
        unit = demand.resreq
        held = demand.executors
        underused: bool | None = None
        if use_priority:
            target = _target(demand)
            desired = [min(unit[d] * target, remaining[d]) for d in range(3)]
            remaining = [remaining[d] - desired[d] for d in range(3)]
            if top_needy is not None and demand.priority < top_needy:
                underused = False
            elif any(desired) and any(held * unit[d] < desired[d] for d in range(3)):
                underused = True
        if underused is None and use_drf:
            # v0.6.0 counts executors only once bound, and a bound executor pulls a pending task
            # at once; the fake's executors hold their session from creation, so pending tasks
            # that idle held executors are about to take are not counted as waiting.
            idle = max(held - demand.running, 0)
            if demand.pending <= idle:
                underused = False
            else:
                shares = [held * unit[d] / capacity[d] for d in range(3) if capacity[d] > 0]
                underused = max(shares, default=0.0) < 1 / len(demands)
        if not underused:
            continue
        if demand.max_instances is not None and held >= demand.max_instances:
            continue
        batch = _batch(demand)
        count = batch - held % batch
        if use_drf:
            if not _fits(count, unit, (free[0], free[1], free[2])):
                continue
            free = [free[d] - count * unit[d] for d in range(3)]
        grants.append(Grant(demand, count))
    return grants
