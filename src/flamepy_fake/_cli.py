"""The ``flamepy-fake`` command line: serve a fake cluster, or run a command against a fresh one.

``flamepy-fake serve`` keeps a cluster up until SIGINT/SIGTERM; ``flamepy-fake run -- CMD``
starts one on free ports, runs CMD with ``FLAME_ENDPOINT`` and ``FLAME_CACHE_ENDPOINT``
exported, stops the cluster and exits with CMD's status. Usage errors (a bad option, a taken
port) print one line on stderr and exit 2.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shlex
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from types import FrameType
from typing import Any, NoReturn

from ._cluster import ClusterStartError, FakeCluster
from ._options import ClusterOptions, OptionSpec, deprecated_backend_text

__all__ = ["main"]

PROG = "flamepy-fake"
EXIT_USAGE = 2
EXIT_NOT_FOUND = 127
EXIT_NOT_EXECUTABLE = 126

_LOG_LEVELS = ("debug", "info", "warning", "error")


class _UsageError(Exception):
    """A user mistake reported as one line and exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (``flamepy-fake: error: ...``) and exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{PROG}: error: {message} (see '{self.prog} --help')\n")


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range 0..65535: {value}")
    return value


def _add_cluster_options(parser: argparse.ArgumentParser, *, ports: bool) -> None:
    group = parser.add_argument_group("cluster options")
    if ports:
        group.add_argument(
            "--host",
            default="127.0.0.1",
            help="address to bind both servers to (default: 127.0.0.1; 0.0.0.0 serves every interface)",
        )
        group.add_argument(
            "--advertise-host",
            metavar="H",
            help="host put in the endpoints clients are told (default: --host, or 127.0.0.1 for 0.0.0.0)",
        )
        group.add_argument(
            "--port", type=_port, default=0, help="session manager port (default: 0, a free port)"
        )
        group.add_argument(
            "--cache-port", type=_port, default=0, help="object cache port (default: 0, a free port)"
        )
    group.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="log each call as it is served (-v), and debug messages too (-vv); on stderr",
    )
    group.add_argument(
        "--log-level",
        type=str.lower,
        choices=_LOG_LEVELS,
        help="log level on stderr: info shows each call as it is served (default: warning, or as -v says)",
    )
    for spec in ClusterOptions.specs():
        _add_cluster_option(group, spec)
    group.add_argument(
        "--work-dir",
        metavar="DIR",
        help="parent of the cluster's temporary working directory (default: the system temp dir)",
    )
    group.add_argument(
        "--cache-storage",
        metavar="DIR",
        help="persist cached objects under DIR (default: memory only)",
    )


def _add_cluster_option(group: argparse._ArgumentGroup, spec: OptionSpec) -> None:
    """One flag of :class:`ClusterOptions` (absent: the option's default)."""
    text = spec.help_text()
    if spec.name == "executors":  # its former spelling --backend still works, with a warning
        group.add_argument(
            spec.flag, "--backend", dest=spec.name, choices=spec.choices, action=_Executors, help=text
        )
    elif spec.switch:
        no = "--no-" + spec.flag[2:]
        group.add_argument(
            spec.flag, action=argparse.BooleanOptionalAction, default=None, help=f"{text}; {no}: false"
        )
    elif spec.choices is not None:
        group.add_argument(spec.flag, choices=spec.choices, help=text)
    else:
        group.add_argument(spec.flag, type=spec.parse, metavar=spec.metavar, help=text)


class _Executors(argparse.Action):
    """``--executors``; its former spelling ``--backend`` works too, with one warning on stderr."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option: str | None = None,
    ) -> None:
        if option == "--backend":
            print(f"{PROG}: warning: {deprecated_backend_text('--backend')}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def _version() -> str:
    from ._version import FLAME_VERSION, __version__

    return f"{__version__} (a fake of Flame {FLAME_VERSION})"


def _subparser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            sub: argparse.ArgumentParser = action.choices[command]
            return sub
    raise LookupError(command)  # pragma: no cover: build_parser() always adds the commands


def build_parser() -> argparse.ArgumentParser:
    """Build the ``flamepy-fake`` argument parser (public for documentation tools and tests)."""
    parser = _Parser(
        prog=PROG,
        description="A wire-faithful fake Flame cluster (session manager, executors, object cache).",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True
    serve = commands.add_parser(
        "serve",
        help="serve a fake cluster until SIGINT or SIGTERM",
        description="Serve a fake cluster until SIGINT or SIGTERM. Prints the endpoints, then a line "
        "'flamepy-fake ready: FLAME_ENDPOINT=... FLAME_CACHE_ENDPOINT=...'.",
    )
    _add_cluster_options(serve, ports=True)
    serve.add_argument(
        "--print-env",
        action="store_true",
        help="print only 'export FLAME_ENDPOINT=...' lines (and FLAMEPY_FAKE_PID) on stdout, then close "
        'it; the other messages go to stderr. Use: eval "$(flamepy-fake serve --print-env &)"',
    )
    run = commands.add_parser(
        "run",
        help="run a command against a fresh fake cluster",
        usage=f"{PROG} run [cluster options] -- CMD [ARGS...]",
        description="Start a fake cluster on free ports, run CMD with FLAME_ENDPOINT and "
        "FLAME_CACHE_ENDPOINT exported, stop the cluster and exit with CMD's status. "
        "SIGINT and SIGTERM are forwarded to CMD.",
    )
    _add_cluster_options(run, ports=False)
    run.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD [ARGS...]", help="the command to run")
    return parser


def _cluster_from(args: argparse.Namespace) -> FakeCluster:
    try:
        return FakeCluster(
            host=getattr(args, "host", "127.0.0.1"),
            port=getattr(args, "port", 0),
            cache_port=getattr(args, "cache_port", 0),
            **{
                name: getattr(args, name)
                for name in ClusterOptions.names()
                if getattr(args, name) is not None
            },
            work_dir=args.work_dir,
            cache_storage_dir=args.cache_storage,
            advertise_host=getattr(args, "advertise_host", None),
            log_calls=_log_level(args) <= logging.INFO,
        )
    except ValueError as exc:
        raise _UsageError(str(exc)) from exc


def _log_level(args: argparse.Namespace) -> int:
    if args.log_level is not None:
        level: int = getattr(logging, args.log_level.upper())
        return level
    return {0: logging.WARNING, 1: logging.INFO}.get(args.verbose, logging.DEBUG)


@contextlib.contextmanager
def _logging_to_stderr(args: argparse.Namespace) -> Iterator[None]:
    """Log records of flamepy_fake at the chosen level on stderr, one line each, while active.

    Undone afterwards, so ``main()`` called in-process leaves the logging setup as it found it.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"{PROG}: %(message)s"))
    logger = logging.getLogger("flamepy_fake")
    saved = (logger.level, logger.propagate)
    logger.addHandler(handler)
    logger.setLevel(_log_level(args))
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


class _Signals:
    """Route SIGINT/SIGTERM to a callback while active; restore the old handlers after."""

    def __init__(self, callback: Any) -> None:
        self._callback = callback
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _Signals:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self._callback(signum)

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def _serve(args: argparse.Namespace) -> int:
    cluster = _cluster_from(args)
    stop = threading.Event()
    with _Signals(lambda signum: stop.set()):
        try:
            cluster.start()
        except ClusterStartError as exc:
            raise _UsageError(str(exc)) from exc
        try:
            env = cluster.env
            out = sys.stderr if args.print_env else sys.stdout
            print(f"{PROG}: session manager at {cluster.endpoint}", file=out, flush=True)
            if "FLAME_CACHE_ENDPOINT" in env:
                print(f"{PROG}: object cache at {env['FLAME_CACHE_ENDPOINT']}", file=out, flush=True)
            ready = " ".join(f"{key}={value}" for key, value in env.items())
            print(f"{PROG} ready: {ready}", file=out, flush=True)
            if args.print_env:
                _print_env(env)
            # Event.wait wakes on the handler's set(); poll so the main thread stays responsive.
            while not stop.wait(0.5):
                pass
            print(f"{PROG}: stopping", file=out, flush=True)
        finally:
            cluster.stop()
    return 0


def _print_env(env: dict[str, str]) -> None:
    """Print eval-able export lines, then close stdout so ``$(...)`` returns while we serve."""
    lines = [f"export {key}={shlex.quote(value)}" for key, value in env.items()]
    lines.append(f"export FLAMEPY_FAKE_PID={os.getpid()}")
    sys.stdout.write("\n".join(lines) + "\n")
    sys.stdout.flush()
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _terminal_delivers_sigint() -> bool:
    """Whether we are the foreground job of a terminal (so Ctrl-C reaches our children too)."""
    try:
        return os.tcgetpgrp(sys.stdin.fileno()) == os.getpgrp()
    except (OSError, ValueError, AttributeError):  # no terminal, or stdin replaced/closed
        return False


def _run(args: argparse.Namespace) -> int:
    cmd = list(args.cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        raise _UsageError("run needs a command: flamepy-fake run [options] -- CMD [ARGS...]")
    cluster = _cluster_from(args)
    child: subprocess.Popen[bytes] | None = None
    pending: list[int] = []

    from_terminal = _terminal_delivers_sigint()

    def forward(signum: int) -> None:
        if child is None:
            pending.append(signum)
        elif signum == signal.SIGINT and from_terminal:
            # Ctrl-C reaches the whole foreground process group, CMD included; a second copy
            # would interrupt CMD's own clean-up.
            return
        else:
            with contextlib.suppress(ProcessLookupError):  # it exited meanwhile
                child.send_signal(signum)

    with _Signals(forward):
        try:
            cluster.start()
        except ClusterStartError as exc:
            raise _UsageError(str(exc)) from exc
        try:
            if pending:  # interrupted while starting: do not start CMD at all
                return 128 + pending[0]
            env = cluster.client_env()
            try:
                child = subprocess.Popen(cmd, env=env)
            except FileNotFoundError:
                print(f"{PROG}: error: command not found: {cmd[0]}", file=sys.stderr)
                return EXIT_NOT_FOUND
            except PermissionError:
                print(f"{PROG}: error: permission denied: {cmd[0]}", file=sys.stderr)
                return EXIT_NOT_EXECUTABLE
            # Wait in slices: a signal delivered to one of the cluster's native threads is
            # handled (forwarded) only when the main thread returns to the interpreter.
            while True:
                try:
                    status = child.wait(timeout=0.5)
                    break
                except subprocess.TimeoutExpired:
                    continue
        finally:
            cluster.stop()
    # A child killed by a signal exits like a shell reports it: 128 + signal number.
    return 128 - status if status < 0 else status


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``flamepy-fake`` command line.

    Args:
        argv: the arguments after the program name; ``sys.argv[1:]`` when omitted.

    Returns:
        The exit status: 0 for ``serve`` stopped by a signal, CMD's status for ``run``,
        2 for a usage error (bad option, taken port).
    """
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # the subcommand's own error, so it points at 'flamepy-fake <command> --help'
        _subparser(parser, args.command).error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        with _logging_to_stderr(args):
            if args.command == "serve":
                return _serve(args)
            return _run(args)
    except _UsageError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
