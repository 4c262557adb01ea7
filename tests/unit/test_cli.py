"""The ``flamepy-fake`` command line: serve, run, help, and one-line usage errors with exit 2."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from flamepy_fake._cli import build_parser, main
from flamepy_fake._values import parse_size

BIN = Path(sys.executable).parent
FLAMEPY_FAKE = str(BIN / "flamepy-fake")
# Children find this venv's python and flamepy-fake first, as after the README's set-up.
CHILD_ENV = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def _start_serve(*args: str) -> tuple[subprocess.Popen[str], list[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "flamepy_fake", "serve", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=CHILD_ENV,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    for line in proc.stdout:  # blocks until the ready line (or EOF if it failed)
        lines.append(line.rstrip("\n"))
        if line.startswith("flamepy-fake ready: "):
            break
    return proc, lines


def _finish(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=60)
    return proc.returncode, out, err


# ---------------------------------------------------------------------------- serve


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_prints_endpoints_and_ready_line_then_stops_on_signal(sig: signal.Signals) -> None:
    proc, lines = _start_serve()
    try:
        assert len(lines) == 3, lines
        assert lines[0].startswith("flamepy-fake: session manager at http://127.0.0.1:")
        assert lines[1].startswith("flamepy-fake: object cache at grpc://127.0.0.1:")
        endpoint, cache = lines[0].rsplit(" ", 1)[1], lines[1].rsplit(" ", 1)[1]
        assert lines[2] == f"flamepy-fake ready: FLAME_ENDPOINT={endpoint} FLAME_CACHE_ENDPOINT={cache}"
        listed = subprocess.run(
            [
                sys.executable,
                "-c",
                "import flamepy; print(sorted(a.name for a in flamepy.list_applications()))",
            ],
            env={**CHILD_ENV, "FLAME_ENDPOINT": endpoint, "FLAME_CACHE_ENDPOINT": cache},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert listed.stdout == "['flmexec', 'flmping', 'flmrun']\n", listed.stderr
    finally:
        proc.send_signal(sig)
        status, out, err = _finish(proc)
    assert status == 0, err
    assert out == "flamepy-fake: stopping\n"
    assert err == ""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_serve_uses_the_ports_it_is_given() -> None:
    port, cache_port = _free_port(), _free_port()
    proc, lines = _start_serve("--port", str(port), "--cache-port", str(cache_port))
    try:
        assert lines[2] == (
            f"flamepy-fake ready: FLAME_ENDPOINT=http://127.0.0.1:{port} "
            f"FLAME_CACHE_ENDPOINT=grpc://127.0.0.1:{cache_port}"
        )
    finally:
        proc.terminate()
        status, _, err = _finish(proc)
    assert status == 0, err


@pytest.mark.parametrize("option", ["--port", "--cache-port"])
def test_serve_on_a_taken_port_is_a_one_line_error(option: str, taken_port: int) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "flamepy_fake", "serve", option, str(taken_port)],
        capture_output=True,
        text=True,
        timeout=60,
        env=CHILD_ENV,
    )
    assert proc.returncode == 2
    what = "session manager" if option == "--port" else "object cache"
    assert proc.stderr == (
        f"flamepy-fake: error: cannot bind the {what} to 127.0.0.1:{taken_port}: address already in use "
        "(choose another port, or 0 for a free one)\n"
    )
    assert proc.stdout == ""


# ---------------------------------------------------------------------------- run


def test_run_lists_the_default_applications_through_flamepy() -> None:
    # The "done when" check, verbatim, through the installed console script.
    proc = subprocess.run(
        [
            FLAMEPY_FAKE,
            "run",
            "--",
            "python",
            "-c",
            "import flamepy; print(sorted(a.name for a in flamepy.list_applications()))",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=CHILD_ENV,
        cwd=Path(__file__).parent,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "['flmexec', 'flmping', 'flmrun']\n"


NUMPY_APP = """
import sys
from flamepy_runner import RemoteError, Runner
from shop import numpy_sum

with Runner("numpy-app", project_dir=".") as runner:
    try:
        print(runner.service(numpy_sum)(4).get())
    except RemoteError as exc:
        print(exc.remote_message)
"""


@pytest.mark.parametrize(
    ("options", "printed"), [([], "No module named 'numpy'"), (["--instance-imports", "all"], "6")]
)
def test_run_instance_imports(tmp_path: Path, options: list[str], printed: str) -> None:
    # numpy is installed here, but the project declares nothing: an executor would not have it.
    (tmp_path / "shop.py").write_text(
        "def numpy_sum(n):\n    import numpy\n    return int(numpy.arange(n).sum())\n"
    )
    (tmp_path / "app.py").write_text(NUMPY_APP)
    proc = subprocess.run(
        [FLAMEPY_FAKE, "run", *options, "--", sys.executable, "app.py"],
        capture_output=True,
        text=True,
        timeout=120,
        env=CHILD_ENV,
        cwd=tmp_path,
    )
    assert (proc.returncode, proc.stdout) == (0, printed + "\n"), proc.stderr


def test_run_exports_the_endpoints_and_exits_with_the_command_status(
    capfd: pytest.CaptureFixture[str],
) -> None:
    code = (
        "import os, sys; print(os.environ['FLAME_ENDPOINT'], os.environ['FLAME_CACHE_ENDPOINT']); sys.exit(3)"
    )
    status = main(["run", "--", sys.executable, "-c", code])
    out = capfd.readouterr().out
    endpoint, cache = out.split()
    assert endpoint.startswith("http://127.0.0.1:") and cache.startswith("grpc://127.0.0.1:")
    assert status == 3


def test_run_stops_the_cluster_after_the_command(capfd: pytest.CaptureFixture[str]) -> None:
    code = "import os; print(os.environ['FLAME_ENDPOINT'])"
    assert main(["run", "--max-executors", "2", "--", sys.executable, "-c", code]) == 0
    endpoint = capfd.readouterr().out.strip()
    port = int(endpoint.rsplit(":", 1)[1])
    with socket.socket() as sock:  # the port is free again: nothing serves it
        assert sock.connect_ex(("127.0.0.1", port)) != 0


def test_run_without_double_dash_also_works(capfd: pytest.CaptureFixture[str]) -> None:
    assert main(["run", sys.executable, "-c", "print('hi')"]) == 0
    assert capfd.readouterr().out == "hi\n"


def test_run_reports_a_signal_death_like_a_shell(capfd: pytest.CaptureFixture[str]) -> None:
    code = "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"
    assert main(["run", "--", sys.executable, "-c", code]) == 128 + signal.SIGKILL


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_run_forwards_signals_to_the_command(sig: signal.Signals) -> None:
    code = (
        "import signal, sys, time\n"
        f"signal.signal({int(sig)}, lambda *_: sys.exit(7))\n"
        "print('child ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "flamepy_fake", "run", "--", sys.executable, "-c", code],
        stdin=subprocess.DEVNULL,  # no terminal: the signal reaches CMD only through flamepy-fake
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=CHILD_ENV,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == "child ready\n"
    proc.send_signal(sig)
    status, _, err = _finish(proc)
    assert status == 7, err


def test_run_an_unknown_command_exits_127(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--", "no-such-command-flamepy-fake"]) == 127
    assert capsys.readouterr().err == "flamepy-fake: error: command not found: no-such-command-flamepy-fake\n"


# ---------------------------------------------------------------------------- usage errors


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["serve", "--port", "http"], "argument --port: not a port number: 'http' (see 'flamepy-fake serve"),
        (["serve", "--port", "70000"], "argument --port: port out of range 0..65535: 70000"),
        (["serve", "--executors", "k8s"], "argument --executors/--backend: invalid choice: 'k8s'"),
        (["run", "--max-executors", "0", "--", "true"], "argument --max-executors: must be at least 1: 0"),
        (
            ["run", "--cache-max-memory", "12X", "--", "true"],
            "argument --cache-max-memory: not a size: '12X'",
        ),
        (
            ["run", "--instance-imports", "some", "--", "true"],
            "argument --instance-imports: invalid choice: 'some' (choose from 'declared', 'all')",
        ),
        ([], "the following arguments are required: COMMAND"),
        (["launch"], "argument COMMAND: invalid choice: 'launch'"),
    ],
)
def test_a_bad_option_is_one_line_and_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith(f"flamepy-fake: error: {message}")


def test_policies_without_gang_are_refused_with_the_reason(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["run", "--policies", "priority", "--", "true"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(
        "flamepy-fake: error: argument --policies: "
        "policies ['priority'] lack 'gang': with them Flame v0.6.0 never creates an executor and "
        "every task stays Pending forever (an upstream defect, xflops/flame#500), so the fake "
        "refuses them; use ['priority', 'gang'] (upstream's images and CI) or "
        "['priority', 'drf', 'gang'] (its built-in default)"
    ), err
    assert err.count("\n") == 1, err


def test_run_needs_a_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--"]) == 2
    assert capsys.readouterr().err == (
        "flamepy-fake: error: run needs a command: flamepy-fake run [options] -- CMD [ARGS...]\n"
    )


def test_same_port_twice_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--port", "5000", "--cache-port", "5000"]) == 2
    assert capsys.readouterr().err == "flamepy-fake: error: port and cache_port must differ (both are 5000)\n"


# ---------------------------------------------------------------------------- help


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("no subcommands")


@pytest.mark.parametrize("command", ["serve", "run"])
def test_help_documents_every_option(command: str) -> None:
    sub = _subcommands()[command]
    proc = subprocess.run(
        [FLAMEPY_FAKE, command, "--help"], capture_output=True, text=True, timeout=60, env=CHILD_ENV
    )
    assert proc.returncode == 0
    options = [opt for action in sub._actions for opt in action.option_strings]
    expected = {"--executors", "--backend", "--flmrun", "--max-executors", "--retry-limit", "--work-dir"}
    assert expected <= set(options)
    for action in sub._actions:
        for option in action.option_strings:
            assert option in proc.stdout
        assert action.help, f"{action.option_strings or action.dest} has no help text"
    if command == "serve":
        expected = {
            "--host",
            "--advertise-host",
            "--port",
            "--cache-port",
            "--cache-storage",
            "--cache-max-memory",
        }
        assert expected <= set(options)
    else:
        assert "-- CMD [ARGS...]" in proc.stdout


def test_top_level_help_lists_the_commands_and_python_m_works() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "flamepy_fake", "--help"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0
    assert "serve" in proc.stdout and "run" in proc.stdout
    assert proc.stdout.startswith("usage: flamepy-fake ")


@pytest.mark.parametrize(
    ("text", "size"),
    [("1", 1), ("1048576", 1048576), ("512M", 512 * 1024**2), ("512MiB", 512 * 1024**2), ("2g", 2 * 1024**3)],
)
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "-1", "1.5G", "12X", "G"])
def test_parse_size_refuses_nonsense(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="not a size"):
        parse_size(text)


def test_run_gives_the_command_a_config_pointing_only_at_the_fake(tmp_path: Path) -> None:
    (tmp_path / ".flame").mkdir()
    (tmp_path / ".flame" / "flame.yaml").write_text(
        "current-context: work\n"
        "contexts:\n"
        "  - name: work\n"
        "    cluster: {endpoint: 'http://flame.example.invalid:8080', tls: {ca_file: /nonexistent/ca.pem}}\n"
        "    package: {storage: 'http://packages.example.invalid/upload'}\n"
    )
    code = (
        "import os, flamepy\n"
        "from flamepy_runner import FlameConfig\n"
        "ctx, ours = flamepy.FlameContext(), FlameConfig.load()\n"
        "print(ctx.endpoint == os.environ['FLAME_ENDPOINT'], ctx.package, ctx._cluster_tls, ctx.cache.tls)\n"
        "print(ours.endpoint == os.environ['FLAME_ENDPOINT'], ours.package_storage, ours.ca_file)\n"
        "print(sorted(k for k in os.environ if k.startswith('FLAME_')))\n"
    )
    env = {
        **CHILD_ENV,
        "HOME": str(tmp_path),
        "FLAME_CA_FILE": "/nonexistent/ca.pem",
        "FLAME_CACHE_STORAGE": "/x",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "flamepy_fake", "run", "--", sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == (
        "True None None None\nTrue None None\n['FLAME_CACHE_ENDPOINT', 'FLAME_ENDPOINT']\n"
    )


def test_parse_size_says_why_zero_is_refused() -> None:
    with pytest.raises(argparse.ArgumentTypeError) as info:
        parse_size("0")
    assert str(info.value) == (
        "0 bytes leaves no room for any object; give a positive size such as 512M, "
        "or leave the option out for no limit"
    )


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flamepy_fake", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=CHILD_ENV,
    )


def test_backend_is_the_deprecated_spelling_of_executors(capsys: pytest.CaptureFixture[str]) -> None:
    from flamepy_fake._cli import build_parser

    args = build_parser().parse_args(["run", "--backend", "thread", "--", "true"])
    assert args.executors == "thread"
    assert capsys.readouterr().err == (
        "flamepy-fake: warning: --backend is deprecated: the instance mode is now executors "
        "(executors=..., --executors, --flame-executors, ini flame_executors; same values: auto, "
        "thread, process); backend names where clusters come from (fake, real, external)\n"
    )
    assert build_parser().parse_args(["run", "--executors", "process", "--", "true"]).executors == "process"
    assert capsys.readouterr().err == ""


def test_version() -> None:
    from importlib.metadata import version

    import flamepy_fake
    import flamepy_runner

    proc = _cli("--version")
    expected = "flamepy-fake 0.1.0 (a fake of Flame v0.6.0)\n"
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, expected, "")
    # One version, written once: the distribution's metadata and both packages agree.
    assert flamepy_fake.__version__ == flamepy_runner.__version__ == version("flamepy-runner") == "0.1.0"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["serve", "--bogus"], "unrecognized arguments: --bogus (see 'flamepy-fake serve --help')"),
        (["run", "--bogus", "--", "true"], "unrecognized arguments: --bogus (see 'flamepy-fake run --help')"),
        (
            ["serve", "--cache-max-memory", "0"],
            "argument --cache-max-memory: 0 bytes leaves no room for any object; give a positive size such "
            "as 512M, or leave the option out for no limit (see 'flamepy-fake serve --help')",
        ),
    ],
)
def test_usage_errors_point_at_the_subcommands_help(argv: list[str], message: str) -> None:
    proc = _cli(*argv)
    assert (proc.returncode, proc.stdout, proc.stderr) == (2, "", f"flamepy-fake: error: {message}\n")


def test_cache_storage_naming_a_file_is_one_line(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "cache.bin"
    not_a_dir.write_text("")
    proc = _cli("serve", "--cache-storage", str(not_a_dir))
    assert (proc.returncode, proc.stdout, proc.stderr) == (
        2,
        "",
        f"flamepy-fake: error: cannot store cached objects in {not_a_dir}: it is a file, not a directory\n",
    )


def test_serve_on_a_host_that_cannot_be_bound_is_one_line() -> None:
    proc = _cli("serve", "--host", "192.0.2.1")
    assert (proc.returncode, proc.stdout, proc.stderr) == (
        2,
        "",
        "flamepy-fake: error: cannot bind the session manager to 192.0.2.1:0: [Errno 99] Cannot assign "
        "requested address (check the host address)\n",
    )


# ---------------------------------------------------------------------------- conveniences


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state == "Z"


def test_serve_print_env_is_eval_able_in_the_background_form_the_readme_gives() -> None:
    script = (
        'eval "$(flamepy-fake serve --print-env &)"\n'
        'echo "pid=$FLAMEPY_FAKE_PID"\n'
        "python -c 'import flamepy; print(sorted(a.name for a in flamepy.list_applications()))'\n"
        'kill -TERM "$FLAMEPY_FAKE_PID"\n'
    )
    proc = subprocess.Popen(
        ["bash", "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={k: v for k, v in CHILD_ENV.items() if not k.startswith("FLAME_")},
    )
    assert proc.stdout is not None
    first = proc.stdout.readline()
    assert first.startswith("pid="), first
    pid = int(first.removeprefix("pid="))
    try:
        out, err = proc.communicate(timeout=60)  # serve holds stderr: returns once it exited
    finally:
        if not _gone(pid):
            os.kill(pid, signal.SIGKILL)
    assert (proc.returncode, out) == (0, "['flmexec', 'flmping', 'flmrun']\n"), err
    lines = err.splitlines()
    assert [line.split(" at ")[0] for line in lines[:2]] == [
        "flamepy-fake: session manager",
        "flamepy-fake: object cache",
    ]
    assert lines[2].startswith("flamepy-fake ready: FLAME_ENDPOINT=http://127.0.0.1:")
    assert lines[3:] == ["flamepy-fake: stopping"]


def test_serve_print_env_prints_only_export_lines_then_closes_stdout() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "flamepy_fake", "serve", "--print-env"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=CHILD_ENV,
    )
    try:
        assert proc.stdout is not None
        out = proc.stdout.read()  # EOF while serve still runs
        assert proc.poll() is None
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=60)
    lines = out.splitlines()
    assert len(lines) == 3, out
    assert lines[0].startswith("export FLAME_ENDPOINT=http://127.0.0.1:")
    assert lines[1].startswith("export FLAME_CACHE_ENDPOINT=grpc://127.0.0.1:")
    assert lines[2] == f"export FLAMEPY_FAKE_PID={proc.pid}"
    assert proc.returncode == 0, err


def test_verbose_shows_each_call_as_it_is_served() -> None:
    proc, lines = _start_serve("-v")
    try:
        endpoint = lines[0].rsplit(" ", 1)[1]
        cache = lines[1].rsplit(" ", 1)[1]
        code = (
            "import flamepy\n"
            "flamepy.list_applications()\n"
            "try:\n"
            "    flamepy.get_application('nope')\n"
            "except Exception:\n"
            "    pass\n"
            "ref = flamepy.put_object('app/ssn', 1)\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", code],
            env={**CHILD_ENV, "FLAME_ENDPOINT": endpoint, "FLAME_CACHE_ENDPOINT": cache},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
    finally:
        proc.terminate()
        status, _, err = _finish(proc)
    assert status == 0, err
    served = [line for line in err.splitlines() if " served " in line]
    assert served == [
        "flamepy-fake: served flame.v1.Frontend/ListApplication: OK",
        "flamepy-fake: served flame.v1.Frontend/GetApplication: NOT_FOUND",
        "flamepy-fake: served arrow.flight.protocol.FlightService/DoPut: OK",
    ], err


def test_log_level_warning_shows_no_calls() -> None:
    proc, lines = _start_serve("--log-level", "warning")
    try:
        endpoint = lines[0].rsplit(" ", 1)[1]
        subprocess.run(
            [sys.executable, "-c", "import flamepy; flamepy.list_applications()"],
            env={**CHILD_ENV, "FLAME_ENDPOINT": endpoint},
            capture_output=True,
            timeout=60,
            check=True,
        )
    finally:
        proc.terminate()
        status, _, err = _finish(proc)
    assert (status, err) == (0, "")


def test_cluster_flags_reach_the_cluster_and_absent_ones_leave_its_defaults() -> None:
    from flamepy_fake._cli import _cluster_from
    from flamepy_fake._options import ClusterOptions

    given = build_parser().parse_args(
        ["serve", "--no-fork-server", "--default-resreq", "4,8G,1", "--policies", "priority,drf,gang"]
    )
    names = ClusterOptions.names()
    options = {k: v for k, v in _cluster_from(given).options.items() if k in names}
    assert options == {
        **ClusterOptions().as_dict(),
        "fork_server": False,
        "default_resreq": (4, 8 * 2**30, 1),
        "policies": ("priority", "drf", "gang"),
    }
    defaults = _cluster_from(build_parser().parse_args(["serve"])).options
    assert {k: v for k, v in defaults.items() if k in names} == ClusterOptions().as_dict()
