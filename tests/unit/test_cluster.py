"""FakeCluster: lifecycle, misuse messages, endpoints and env, binding, independence, leaks."""

from __future__ import annotations

import ipaddress
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest
from support import eventually

from flamepy_fake import ClusterStartError, FakeCluster
from flamepy_runner import FlameConfig, UsageError
from flamepy_runner._proto import pb, rpc

if TYPE_CHECKING:
    from tests.conftest import ResourceSnapshot


@pytest.fixture
def cluster() -> Iterator[FakeCluster]:
    with FakeCluster() as c:
        yield c


def _frontend(endpoint: str) -> tuple[grpc.Channel, rpc.Stub]:
    channel = grpc.insecure_channel(endpoint.removeprefix("http://"))
    return channel, rpc.Stub(channel, pb.FRONTEND_SERVICE)


def _app_names(endpoint: str) -> list[str]:
    channel, stub = _frontend(endpoint)
    with channel:
        apps = stub.ListApplication(pb.ListApplicationRequest(), timeout=10)
    return sorted(app.metadata.name for app in apps.applications)


def _listening(port: int) -> list[str]:
    """Local addresses of the LISTEN sockets on ``port`` (from /proc/net/tcp and tcp6)."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            hex_addr, hex_port = fields[1].split(":")
            if fields[3] == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                # The kernel prints each 32-bit word in host (little-endian) order.
                raw = b"".join(bytes.fromhex(hex_addr[i : i + 8])[::-1] for i in range(0, len(hex_addr), 8))
                addr = ipaddress.ip_address(raw)
                if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
                    addr = addr.ipv4_mapped
                found.append(str(addr))
    return found


def _taken_port() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


# ---------------------------------------------------------------------------- endpoints and env


def test_serves_the_default_applications_on_loopback(cluster: FakeCluster) -> None:
    assert cluster.endpoint.startswith("http://127.0.0.1:")
    assert cluster.cache_endpoint.startswith("grpc://127.0.0.1:")
    assert cluster.port == int(cluster.endpoint.rsplit(":", 1)[1])
    assert _app_names(cluster.endpoint) == ["flmexec", "flmping", "flmrun"]


def test_env_and_config_point_at_the_cluster(cluster: FakeCluster) -> None:
    assert cluster.env == {
        "FLAME_ENDPOINT": cluster.endpoint,
        "FLAME_CACHE_ENDPOINT": cluster.cache_endpoint,
    }
    cluster.env["FLAME_ENDPOINT"] = "changed"  # a fresh dict each time: the cluster is unaffected
    assert cluster.env["FLAME_ENDPOINT"] == cluster.endpoint
    assert cluster.config == FlameConfig(endpoint=cluster.endpoint, cache_endpoint=cluster.cache_endpoint)
    assert FlameConfig.load(environ=cluster.env, path=None).endpoint == cluster.endpoint


def test_cache_endpoint_serves_flight(cluster: FakeCluster) -> None:
    from pyarrow import flight

    client = flight.FlightClient(cluster.cache_endpoint)
    try:
        names = [action.type for action in client.list_actions()]
    finally:
        client.close()
    assert "DELETE" in names


def test_state_options_reach_the_session_manager() -> None:
    with FakeCluster(default_resreq=(2, 2048, 1), retry_limit=3) as c:
        assert c.state.retry_limit == 3
        channel, stub = _frontend(c.endpoint)
        with channel:
            spec = pb.SessionSpec(application="flmping")  # no resreq: the cluster default applies
            stub.CreateSession(pb.CreateSessionRequest(session_id="r", session=spec), timeout=10)
            got = stub.GetSession(pb.GetSessionRequest(session_id="r"), timeout=10)
            stub.CloseSession(pb.CloseSessionRequest(session_id="r"), timeout=10)
        assert (got.spec.resreq.cpu, got.spec.resreq.memory, got.spec.resreq.gpu) == (2, 2048, 1)


def test_executors_and_logs_start_empty(cluster: FakeCluster) -> None:
    assert cluster.executors() == []
    with pytest.raises(KeyError, match="nope"):
        cluster.instance_logs("nope")
    assert cluster.state.executors() == []


def test_repr_says_where_and_whether_it_runs() -> None:
    c = FakeCluster()
    assert repr(c) == "<FakeCluster new>"
    with c:
        assert repr(c) == f"<FakeCluster running endpoint={c.endpoint} cache_endpoint={c.cache_endpoint}>"
    assert repr(c) == "<FakeCluster stopped>"


# ---------------------------------------------------------------------------- lifecycle and misuse


def test_start_and_stop_are_idempotent() -> None:
    c = FakeCluster()
    assert not c.running
    assert c.start() is c
    endpoint = c.endpoint
    assert c.start() is c  # already running: nothing happens
    assert c.endpoint == endpoint and c.running
    c.stop()
    c.stop()
    assert not c.running


@pytest.mark.parametrize("attribute", ["endpoint", "cache_endpoint", "env", "config", "state", "work_dir"])
def test_using_a_cluster_before_start_says_how_to_start_it(attribute: str) -> None:
    with pytest.raises(UsageError) as info:
        getattr(FakeCluster(), attribute)
    assert str(info.value) == (
        f"Cannot use {attribute} before the FakeCluster is started: "
        "call start() or use 'with FakeCluster() as cluster:'."
    )


@pytest.mark.parametrize("attribute", ["endpoint", "cache_endpoint", "env", "config", "state"])
def test_using_a_stopped_cluster_is_refused(attribute: str) -> None:
    with FakeCluster() as c:
        pass
    with pytest.raises(UsageError, match=f"^Cannot use {attribute} of a FakeCluster that has been stopped; "):
        getattr(c, attribute)


def test_methods_of_a_stopped_cluster_are_refused() -> None:
    with FakeCluster() as c:
        pass
    with pytest.raises(UsageError, match=r"Cannot use executors\(\) of a FakeCluster that has been stopped"):
        c.executors()
    with pytest.raises(UsageError, match=r"Cannot use instance_logs\(\) of a FakeCluster"):
        c.instance_logs("x")


def test_a_stopped_cluster_cannot_restart() -> None:
    c = FakeCluster()
    c.start()
    c.stop()
    with pytest.raises(UsageError) as info:
        c.start()
    assert str(info.value) == (
        "Cannot restart a FakeCluster once it has been stopped; create a new FakeCluster."
    )


def test_stop_before_start_makes_it_unusable() -> None:
    c = FakeCluster()
    c.stop()
    with pytest.raises(UsageError, match="Cannot restart"):
        c.start()


RESREQ = "default_resreq must be (cpu, memory, gpu) non-negative ints"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"port": -1}, "port must be an integer in 0..65535 (0 picks a free port); got -1"),
        ({"port": 70000}, "port must be an integer in 0..65535 (0 picks a free port); got 70000"),
        ({"cache_port": "80"}, "cache_port must be an integer in 0..65535 (0 picks a free port); got '80'"),
        ({"port": 5000, "cache_port": 5000}, "port and cache_port must differ (both are 5000)"),
        ({"executors": "docker"}, "executors must be one of auto, thread, process; got 'docker'"),
        ({"flmrun": "uv"}, "flmrun must be one of builtin, flamepy; got 'uv'"),
        ({"instance_imports": None}, "instance_imports must be one of declared, all; got None"),
        ({"fork_server": "yes"}, "fork_server must be True, False or None; got 'yes'"),
        ({"max_executors": 0}, "max_executors must be a positive integer or None; got 0"),
        ({"max_executors": True}, "max_executors must be a positive integer or None; got True"),
        ({"retry_limit": True}, "retry_limit must be a positive integer; got True"),
        ({"retry_limit": 0}, "retry_limit must be a positive integer; got 0"),
        ({"default_resreq": (1, 2)}, f"{RESREQ}; got (1, 2)"),
        ({"default_resreq": (1, 2, -1)}, f"{RESREQ}; got (1, 2, -1)"),
        (
            {"cache_max_memory": 0},
            "cache_max_memory must be a positive number of bytes or a size such as 512M or 2G; got 0",
        ),
        ({"host": ""}, "host must be a non-empty address, e.g. '127.0.0.1'"),
    ],
)
def test_bad_options_are_refused_when_built(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError) as err:
        FakeCluster(**kwargs)  # type: ignore[arg-type]
    assert str(err.value) == message


def test_the_smallest_valid_values_are_taken() -> None:
    options = FakeCluster(
        max_executors=1, retry_limit=1, default_resreq=(0, 0, 0), cache_max_memory="1K", fork_server=False
    ).options
    assert (options["max_executors"], options["retry_limit"], options["default_resreq"]) == (1, 1, (0, 0, 0))
    assert (options["cache_max_memory"], options["fork_server"]) == (1024, False)


def test_backend_is_the_deprecated_name_of_executors() -> None:
    with pytest.warns(DeprecationWarning) as caught:
        cluster = FakeCluster(backend="thread")
    assert [str(w.message) for w in caught] == [
        "FakeCluster(backend=...) is deprecated: the instance mode is now executors (executors=..., "
        "--executors, --flame-executors, ini flame_executors; same values: auto, thread, process); "
        "backend names where clusters come from (fake, real, external)"
    ]
    assert caught[0].filename == __file__  # the warning points at the caller
    assert cluster.options["executors"] == "thread"
    with pytest.raises(TypeError) as err:
        FakeCluster(executors="thread", backend="thread")
    assert str(err.value) == "give executors or its former name backend, not both"


def test_policies_default_to_upstreams_images_and_refuse_a_list_without_gang() -> None:
    assert FakeCluster().options["policies"] == ("priority", "gang")
    assert FakeCluster().options["max_executors"] is None  # v0.6.0 has no executor cap
    assert FakeCluster(policies=["gang", "drf"]).options["policies"] == ("drf", "gang")
    with pytest.raises(ValueError) as exc:
        FakeCluster(policies=["priority"])
    assert str(exc.value) == (
        "policies ['priority'] lack 'gang': with them Flame v0.6.0 never creates an executor and "
        "every task stays Pending forever (an upstream defect, xflops/flame#500), so the fake "
        "refuses them; use ['priority', 'gang'] (upstream's images and CI) or "
        "['priority', 'drf', 'gang'] (its built-in default)"
    )
    with pytest.raises(ValueError) as exc:
        FakeCluster(policies=["priority", "shim", "gang"])
    assert str(exc.value) == 'unknown policy: shim. available: ["priority", "drf", "gang"]'


def test_positional_arguments_are_refused() -> None:
    with pytest.raises(TypeError):
        FakeCluster("127.0.0.1")  # type: ignore[misc]


# ---------------------------------------------------------------------------- ports and binding


def test_taken_port_is_a_clear_error_and_leaves_nothing(resources: ResourceSnapshot) -> None:
    with _taken_port() as sock:
        port = sock.getsockname()[1]
        with pytest.raises(ClusterStartError) as info:
            FakeCluster(port=port).start()
        assert str(info.value) == (
            f"cannot bind the session manager to 127.0.0.1:{port}: address already in use "
            "(choose another port, or 0 for a free one)"
        )
    resources.assert_clean()


def test_taken_cache_port_is_a_clear_error_and_leaves_nothing(resources: ResourceSnapshot) -> None:
    with _taken_port() as sock:
        port = sock.getsockname()[1]
        c = FakeCluster(cache_port=port)
        expected = f"cannot bind the object cache to 127.0.0.1:{port}: address already in use"
        with pytest.raises(ClusterStartError, match=expected):
            c.start()
        assert not c.running
    resources.assert_clean()


def test_a_port_in_time_wait_is_free(resources: ResourceSnapshot) -> None:
    # Restarting `flamepy-fake serve --port P` right after clients talked to it must work.
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as every server does
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = listener.accept()
        accepted.close()  # the server side closes first: its end of the pair enters TIME_WAIT
        client.close()
    with FakeCluster(port=port) as c:
        assert c.port == port


def test_port_of_another_fake_cluster_is_refused() -> None:
    # grpc enables SO_REUSEPORT by default; the cluster turns it off so two servers never share a port.
    with FakeCluster() as first:
        with pytest.raises(ClusterStartError, match="address already in use"):
            FakeCluster(port=first.port).start()
        assert _app_names(first.endpoint) == ["flmexec", "flmping", "flmrun"]


def test_explicit_ports_are_used() -> None:
    with _taken_port() as a, _taken_port() as b:
        port, cache_port = a.getsockname()[1], b.getsockname()[1]
    with FakeCluster(port=port, cache_port=cache_port) as c:
        assert c.endpoint == f"http://127.0.0.1:{port}"
        assert c.cache_endpoint == f"grpc://127.0.0.1:{cache_port}"


def test_binds_loopback_only_by_default(cluster: FakeCluster) -> None:
    cache_port = int(cluster.cache_endpoint.rsplit(":", 1)[1])
    assert _listening(cluster.port) == ["127.0.0.1"]
    assert _listening(cache_port) == ["127.0.0.1"]


def test_binding_every_interface_is_explicit_and_advertises_a_dialable_address() -> None:
    with FakeCluster(host="0.0.0.0") as c:
        assert _listening(c.port) in (["0.0.0.0"], ["::"])
        assert c.endpoint == f"http://127.0.0.1:{c.port}"
        assert not c.cache_endpoint.startswith("grpc://0.0.0.0")
        assert _app_names(c.endpoint) == ["flmexec", "flmping", "flmrun"]


def test_advertise_host_is_what_clients_are_told() -> None:
    with FakeCluster(advertise_host="localhost") as c:
        assert c.endpoint == f"http://localhost:{c.port}"
        assert c.cache_endpoint.startswith("grpc://localhost:")


# ---------------------------------------------------------------------------- independence and leaks


def test_two_clusters_are_independent() -> None:
    with FakeCluster() as a, FakeCluster() as b:
        assert a.endpoint != b.endpoint and a.cache_endpoint != b.cache_endpoint
        assert a.state is not b.state
        channel, stub = _frontend(a.endpoint)
        with channel:
            spec = pb.ApplicationSpec(shim=pb.Host, command="/bin/true")
            result = stub.RegisterApplication(pb.RegisterApplicationRequest(name="only-a", application=spec))
            assert result.return_code == 0
        assert _app_names(a.endpoint) == ["flmexec", "flmping", "flmrun", "only-a"]
        assert _app_names(b.endpoint) == ["flmexec", "flmping", "flmrun"]
        a.stop()
        assert _app_names(b.endpoint) == ["flmexec", "flmping", "flmrun"]


def test_stop_leaves_no_thread_fd_or_directory(resources: ResourceSnapshot) -> None:
    with FakeCluster() as c:
        work_dir = c.work_dir
        assert work_dir.is_dir()
        assert _app_names(c.endpoint)  # serve at least one call so the RPC pool has threads
        assert threading.active_count() > len(resources.threads)
    assert not work_dir.exists()
    assert work_dir in resources.created_dirs
    resources.assert_clean()


def test_unusable_work_dir_is_a_start_error(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    with pytest.raises(ClusterStartError, match=f"cannot create the cluster's work directory in {missing}: "):
        FakeCluster(work_dir=missing).start()


def test_a_cluster_never_stopped_is_stopped_at_exit() -> None:
    code = "from flamepy_fake import FakeCluster; print(FakeCluster().start().work_dir)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    work_dir = Path(proc.stdout.strip())
    assert work_dir.name.startswith("flamepy-fake-")
    assert not work_dir.exists()


# Two clusters one after the other, each with a bound process instance; then the process exits.
SHARED_ZYGOTE_PROGRAM = """
import os, time
from flamepy_fake import FakeCluster
from flamepy_fake._executors import shared_fork_servers
from flamepy_runner._proto import pb, rpc
import grpc

pids = []
for n in range(2):
    with FakeCluster() as c:
        with grpc.insecure_channel(c.endpoint.removeprefix("http://")) as channel:
            stub = rpc.Stub(channel, pb.FRONTEND_SERVICE)
            spec = pb.SessionSpec(application="flmexec", min_instances=1)
            stub.CreateSession(pb.CreateSessionRequest(session_id="warm", session=spec), timeout=10)
        deadline = time.monotonic() + 60
        while not [e for e in c.executors() if e.state == "bound"] and time.monotonic() < deadline:
            time.sleep(0.02)
        (bound,) = [e for e in c.executors() if e.state == "bound"]
        stat = open(f"/proc/{bound.pid}/stat").read()
        pids.append(f"{bound.pid}:{stat.rsplit(')', 1)[1].split()[1]}")  # pid:parent pid
(zygote,) = shared_fork_servers().servers()
print(shared_fork_servers().started, zygote.pid, zygote.log_path.parent, *pids)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="the fork server runs on Linux only")
def test_the_clusters_of_a_process_fork_from_one_zygote_stopped_at_exit() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", SHARED_ZYGOTE_PROGRAM], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    started, zygote_pid, log_dir, *instances = proc.stdout.split()
    assert started == "1"  # the second cluster found the first one's zygote warm
    pids, parents = zip(*(i.split(":") for i in instances), strict=True)
    assert len(set(pids)) == 2
    assert parents == (zygote_pid, zygote_pid)  # both forked by that one zygote
    assert not Path(f"/proc/{zygote_pid}").exists()
    assert not Path(log_dir).exists()
    assert Path(log_dir).name.startswith("flamepy-fake-zygotes-")


@pytest.mark.parametrize("backend", ["thread", "process"])
def test_stop_with_live_instances_leaves_nothing(backend: str, resources: ResourceSnapshot) -> None:
    with FakeCluster(executors=backend) as c:
        channel, stub = _frontend(c.endpoint)
        with channel:
            spec = pb.SessionSpec(application="flmexec", min_instances=2)  # kept warm without tasks
            stub.CreateSession(pb.CreateSessionRequest(session_id="warm", session=spec), timeout=10)
        deadline = time.monotonic() + 60
        while len([e for e in c.executors() if e.state == "bound"]) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        bound = [e for e in c.executors() if e.state == "bound"]
        assert len(bound) == 2, c.executors()
        assert {e.executors for e in bound} == {backend}
        if backend == "process":
            assert all(e.pid for e in bound)
    resources.assert_clean()


def test_work_dir_option_is_the_parent_of_the_cluster_dir(tmp_path: Path) -> None:
    with FakeCluster(work_dir=tmp_path) as c:
        assert c.work_dir.parent == tmp_path
        inside = c.work_dir
    assert not inside.exists()
    assert tmp_path.is_dir()  # the caller's directory is the caller's


def test_stop_ends_a_task_watch_in_progress(resources: ResourceSnapshot) -> None:
    # A client blocked on WatchTask must not keep the server (or its thread) alive after stop().
    c = FakeCluster().start()
    channel, stub = _frontend(c.endpoint)
    # Wasm applications are never scheduled, so the task stays pending and the watch stays open.
    wasm = pb.ApplicationSpec(shim=pb.Wasm, command="app.wasm")
    stub.RegisterApplication(pb.RegisterApplicationRequest(name="wasm", application=wasm), timeout=10)
    session = pb.SessionSpec(application="wasm", min_instances=0)
    stub.CreateSession(pb.CreateSessionRequest(session_id="s1", session=session), timeout=10)
    task = stub.CreateTask(pb.CreateTaskRequest(task=pb.TaskSpec(session_id="s1")), timeout=10)
    stream = stub.WatchTask(pb.WatchTaskRequest(session_id="s1", task_id=task.metadata.id), timeout=60)
    states: list[int] = []

    def watch() -> None:
        try:
            for update in stream:
                states.append(update.status.state)
        except grpc.RpcError:
            pass

    watcher = threading.Thread(target=watch)
    watcher.start()
    # A unary call sent after the watch on the same channel: by its answer the watch is in progress.
    got = stub.GetTask(pb.GetTaskRequest(session_id="s1", task_id=task.metadata.id), timeout=10)
    assert got.status.state == pb.Pending
    c.stop()
    watcher.join(timeout=30)
    channel.close()
    assert not watcher.is_alive()
    assert all(state == pb.Pending for state in states)  # it ended without the task finishing
    resources.assert_clean()


def test_an_instance_that_dies_binding_is_diagnosable_after_it_is_gone(tmp_path: Path) -> None:
    script = tmp_path / "broken_service.py"
    script.write_text("import no_such_module_ffx\n")
    with FakeCluster(retry_limit=2) as cluster:
        channel, stub = _frontend(cluster.endpoint)
        with channel:
            spec = pb.ApplicationSpec(shim=pb.Host, command=sys.executable, arguments=[str(script)])
            stub.RegisterApplication(
                pb.RegisterApplicationRequest(name="broken", application=spec), timeout=30
            )
            session = pb.SessionSpec(application="broken")
            stub.CreateSession(pb.CreateSessionRequest(session_id="ssn-broken", session=session), timeout=30)
            stub.CreateTask(pb.CreateTaskRequest(task=pb.TaskSpec(session_id="ssn-broken")), timeout=30)
        eventually(
            lambda: [e.code for e in cluster.session_events("ssn-broken")] == [1001, 1001, 1002], "1002"
        )
        eventually(lambda: not cluster.executors(), "the executors to go")  # gone: no id to look up there
        executor_ids = cluster.executors_of("ssn-broken")
        assert len(executor_ids) == 2
        node = cluster.state.nodes()[0].name
        socket_dir = cluster._parts.manager._socket_dir  # type: ignore[union-attr]
        events = cluster.session_events("ssn-broken")
        for eid, event in zip(executor_ids, events, strict=False):
            assert event.message == (
                f"Executor <{eid}> on node <{node}> failed to bind session with return_code <11>: "
                f"shim creation failed: failed to connect to service at <{socket_dir}/{eid}.sock>: "
                f"instance {sys.executable} {script} exited with code 1 "
                f"before creating its socket {socket_dir}/{eid}.sock"
            )
        assert events[2].message == (
            "Session retry limit reached after 2/2 failed attempts; new executor assignment is paused "
            "for this session; existing executors are unchanged."
        )
        for eid in executor_ids:
            logs = cluster.instance_logs(eid)
            assert logs.startswith("--- stdout ---\n--- stderr ---\nTraceback (most recent call last):\n")
            assert logs.endswith("ModuleNotFoundError: No module named 'no_such_module_ffx'\n")
        assert cluster.executors_of("ssn-unknown") == []
        with pytest.raises(UsageError, match="no session 'ssn-unknown' on this FakeCluster"):
            cluster.session_events("ssn-unknown")
    with pytest.raises(UsageError):
        cluster.instance_logs(executor_ids[0])


def test_repr_works_on_a_half_built_cluster() -> None:
    assert repr(FakeCluster.__new__(FakeCluster)) == "<FakeCluster (not initialised)>"


def test_cache_storage_naming_a_file_says_so(tmp_path: Path, resources: ResourceSnapshot) -> None:
    not_a_dir = tmp_path / "cache.bin"
    not_a_dir.write_text("")
    with pytest.raises(ClusterStartError) as info:
        FakeCluster(cache_storage_dir=not_a_dir).start()
    assert str(info.value) == f"cannot store cached objects in {not_a_dir}: it is a file, not a directory"
    resources.assert_clean()


def test_a_host_that_cannot_be_bound_is_one_clear_error(resources: ResourceSnapshot) -> None:
    with pytest.raises(ClusterStartError) as info:
        FakeCluster(host="192.0.2.1").start()  # TEST-NET-1: never a local address
    assert str(info.value) == (
        "cannot bind the session manager to 192.0.2.1:0: [Errno 99] Cannot assign requested address "
        "(check the host address)"
    )
    resources.assert_clean()
