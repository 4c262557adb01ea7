"""The fork server (zygote): forked instances look like spawned ones, and its loss is survivable.

- A Runner task in a forked instance sees what it would see in a spawned one (cwd, sys.path,
  sys.argv, environment, own process group), and the Runner's package is imported by the
  instance, not by the zygote.
- A zygote that dies (here: SIGKILLed) makes the cluster spawn instances instead, after exactly
  one warning; a platform without a safe fork does the same from the start.
- ``fork_server=False`` starts no zygote and warns nothing.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from support import eventually

from flamepy_fake import FakeCluster
from flamepy_runner import Runner

pytestmark = [
    pytest.mark.fake_only(reason="the fork server is the fake's own"),
    pytest.mark.skipif(sys.platform != "linux", reason="the fork server runs on Linux only"),
]

DOWN = (
    "flamepy-fake: the fork server is down (it was killed by signal 9 (SIGKILL)); "
    "instances are spawned instead (slower start-up)"
)


def ping(cluster: FakeCluster) -> int:
    """Run one flmping task in a fresh session; the pid of the instance that served it."""
    import flamepy

    from flamepy_fake.plugin import reset_flamepy_clients

    reset_flamepy_clients()
    saved = {k: os.environ.get(k) for k in cluster.env}
    os.environ.update(cluster.env)
    try:
        ssn = flamepy.create_session("flmping", b"", session_id=f"ping-{uuid.uuid4().hex[:8]}")
        ssn.invoke(b"{}")
        pids = [e.pid for e in cluster.executors() if e.session == ssn.id and e.pid is not None]
        ssn.close()
    finally:
        reset_flamepy_clients()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    assert len(pids) == 1
    return pids[0]


def fallback_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "instances are spawned instead" in r.getMessage()]


def test_a_dead_zygote_falls_back_to_spawning_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, resources: Any
) -> None:
    caplog.set_level(logging.WARNING, logger="flamepy_fake")
    with FakeCluster(work_dir=tmp_path) as cluster:
        zygote = cluster._parts.manager._zygote  # type: ignore[union-attr]
        assert zygote is not None
        ping(cluster)  # served by a forked instance (see test_executors.py's flmping test)
        assert zygote.pid is not None
        os.kill(zygote.pid, signal.SIGKILL)
        eventually(lambda: not zygote.alive(), "the cluster to notice the dead zygote", timeout=30)
        first = ping(cluster)
        second = ping(cluster)
        assert fallback_warnings(caplog) == [DOWN]
        assert first != second
    resources.assert_clean()


def test_without_a_safe_fork_instances_are_spawned_after_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flamepy_fake._executors import _manager

    monkeypatch.setattr(_manager, "fork_supported", lambda: False)
    caplog.set_level(logging.WARNING, logger="flamepy_fake")
    with FakeCluster(work_dir=tmp_path) as cluster:
        assert cluster._parts.manager._zygote is None  # type: ignore[union-attr]
        ping(cluster)
        ping(cluster)
    assert fallback_warnings(caplog) == [
        f"flamepy-fake: no fork server on {sys.platform} (fork is safe on Linux only); "
        "instances are spawned instead (slower start-up)"
    ]


def test_fork_server_false_starts_no_zygote_and_warns_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="flamepy_fake")
    with FakeCluster(work_dir=tmp_path, fork_server=False) as cluster:
        assert cluster._parts.manager._zygote is None  # type: ignore[union-attr]
        ping(cluster)
    assert fallback_warnings(caplog) == []


def test_fork_server_must_be_a_bool_or_none() -> None:
    with pytest.raises(ValueError, match=r"^fork_server must be True, False or None; got 'yes'$"):
        FakeCluster(fork_server="yes")  # type: ignore[arg-type]


PROJECT_MODULE = '''\
import os, sys


def where(_):
    """What the instance program sees of its process."""
    return {
        "cwd": os.getcwd(),
        "path": sys.path,
        "argv": sys.argv,
        "main": sys.modules["__main__"].__spec__.name,
        "env": dict(os.environ),  # all of it: nothing of the zygote's may remain
        "own_group": os.getpgid(0) == os.getpid(),
        "own_session": os.getsid(0) == os.getpid(),
        "module_file": __file__,
    }
'''


def _where(tmp_path: Path, fork_server: bool) -> dict[str, Any]:
    name = f"ffx_where_{uuid.uuid4().hex[:8]}"
    project = tmp_path / f"project-{fork_server}"
    project.mkdir()
    (project / "README.md").write_text("where\n")
    (project / f"{name}.py").write_text(PROJECT_MODULE)
    sys.path.insert(0, str(project))
    try:
        module = __import__(name)
        with (
            FakeCluster(work_dir=tmp_path, fork_server=fork_server) as cluster,
            Runner("where", config=cluster.config, project_dir=project) as runner,
        ):
            report: dict[str, Any] = runner.service(module.where)(0).get()
            work = str(cluster.work_dir)
    finally:
        sys.path.remove(str(project))
        sys.modules.pop(name, None)
    # Normalise what differs per cluster and executor (work directory, ids, socket path).
    cwd = report["cwd"]
    endpoint = report["env"].pop("FLAME_INSTANCE_ENDPOINT")
    report["env"].pop("FLAME_ENDPOINT")
    report["env"].pop("FLAME_CACHE_ENDPOINT")
    text = repr(report).replace(cwd, "<cwd>").replace(work, "<work>").replace(name, "<module>")
    text = re.sub(r"<work>/apps/where/\w+/", "<work>/apps/where/<package>/", text)
    text = re.sub(r"/[^'\s]*/flamepy-fake-releases-\w+/\w+/", "<release>/", text)
    return {"report": text, "socket_in_tmp": endpoint.startswith("/tmp/ffx-")}


def test_a_forked_instance_sees_what_a_spawned_one_sees(tmp_path: Path) -> None:
    forked = _where(tmp_path, fork_server=True)
    spawned = _where(tmp_path, fork_server=False)
    assert forked == spawned
    assert "'own_group': True, 'own_session': True" in forked["report"]
