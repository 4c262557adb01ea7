"""Application installation for the fake executor manager (reference B2, simplified).

Apps whose ``installer`` is ``python`` (or ``binary``) and that have a ``url`` get their package
downloaded (``grpc(s)://host:port/<key>`` from an object cache with ticket ``<key>:0``,
``file://``, ``http(s)://``), extracted (``.tar.gz``, ``.tgz``, ``.zip``; absolute paths,
``..`` and links escaping the tree are refused) and made importable: the extracted tree (and
its ``src/`` directory, if any) goes on ``PYTHONPATH``; declared dependencies the cluster's
Python cannot already import are installed with ``pip install --target`` into the package's
own ``deps`` directory.

Unlike upstream, the package is downloaded at every bind (it is small and local), and the
extraction/installation is keyed by the archive's SHA-256: each package version is installed
once, and re-uploading a changed Runner under the same name runs the new code. With a
:class:`ReleaseStore` (every cluster of a process shares :func:`shared_release_store` by default)
a package version is extracted, and its dependencies installed with pip, once per process
rather than once per cluster: a pytest run pays pip once per project content. Each instance
still runs in its own working directory; the release itself is shared, so a task must not
write into its package directory (on Flame too, the executors of a node share it).
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import hashlib
import importlib.metadata
import os
import posixpath
import re
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import threading
import urllib.parse
import uuid
import zipfile
from pathlib import Path
from typing import Any

from ._control._state import AppRecord
from ._errors import InstallError

__all__ = [
    "InstallError",
    "Installation",
    "Installer",
    "ReleaseStore",
    "close_shared_release_store",
    "shared_release_store",
]

_DOWNLOAD_TIMEOUT = 300.0
_PIP_TIMEOUT = 600.0
_REQ_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


@dataclasses.dataclass(frozen=True)
class Installation:
    """What an installed package adds to an instance's environment.

    Attributes:
        pythonpath: directories to prepend to ``PYTHONPATH`` (first wins).
        path: directories to prepend to ``PATH``.
        env: variables to set when absent (``FLAME_PYTHON_VERSION``, ``FLAME_APP_DIR``).
        release: the release directory (None when nothing was downloaded).
        declared: the dependencies the package's ``pyproject.toml`` declares.
    """

    pythonpath: tuple[str, ...] = ()
    path: tuple[str, ...] = ()
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    release: Path | None = None
    declared: tuple[str, ...] = ()


def python_version() -> str:
    """The ``X.Y`` version of the Python running the cluster."""
    return f"{sys.version_info.major}.{sys.version_info.minor}"


class ReleaseStore:
    """Extracted releases (with their installed dependencies) keyed by content, shared by the
    :class:`Installer` objects given this store; thread-safe.

    Args:
        root: where releases are kept; a temporary directory (made on first use and removed
            by :meth:`close`) by default.
    """

    def __init__(self, root: Path | None = None) -> None:
        self._given = root
        self._root = root
        self._lock = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}
        self._closed = False

    def release(self, kind: str, python: str, digest: str) -> tuple[Path, threading.Lock]:
        """The directory of this release and the lock to hold while installing into it.

        Raises:
            InstallError: the store was closed (the process is exiting).
        """
        key = hashlib.sha256(f"{kind}\0{python}\0{digest}".encode()).hexdigest()[:20]
        with self._lock:
            if self._closed:
                raise InstallError("the release store was closed")
            if self._root is None:
                self._root = Path(tempfile.mkdtemp(prefix="flamepy-fake-releases-"))
            return self._root / key, self._locks.setdefault(key, threading.Lock())

    def close(self) -> None:
        """Refuse new releases; remove the directory if the store made it (idempotent)."""
        with self._lock:
            self._closed = True
            made, self._root = (self._root if self._given is None else None), self._given
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)


_SHARED_RELEASES: ReleaseStore | None = None
_SHARED_RELEASES_LOCK = threading.Lock()


def shared_release_store() -> ReleaseStore:
    """The process-wide release store every cluster uses by default (made on first use)."""
    global _SHARED_RELEASES
    with _SHARED_RELEASES_LOCK:
        if _SHARED_RELEASES is None or _SHARED_RELEASES._closed:
            _SHARED_RELEASES = ReleaseStore()
        return _SHARED_RELEASES


def close_shared_release_store() -> None:
    """Remove the process-wide releases, if any (at exit, and when the pytest run ends)."""
    with _SHARED_RELEASES_LOCK:
        shared = _SHARED_RELEASES
    if shared is not None:
        shared.close()


atexit.register(close_shared_release_store)


class Installer:
    """Installs application packages, each package version once.

    Args:
        root: directory for downloads, and for releases without a ``releases`` store
            (removed by the owner).
        cache_ca_file: CA bundle for ``grpcs://`` downloads.
        python: the interpreter whose ``pip`` installs dependencies.
        releases: keep releases in this shared store instead of under ``root``.
    """

    def __init__(
        self,
        root: Path,
        *,
        cache_ca_file: str | None = None,
        python: str = sys.executable,
        releases: ReleaseStore | None = None,
    ) -> None:
        self.root = root
        self.cache_ca_file = cache_ca_file
        self.python = python
        self.releases = releases
        self._lock = threading.Lock()
        self._key_locks: dict[tuple[str, ...], threading.Lock] = {}
        self.installs = 0  # releases actually extracted (observable in tests)
        self._procs: set[subprocess.Popen[bytes]] = set()
        self._cancelled = False
        self._flight: dict[str, Any] = {}  # location -> FlightClient, kept until cancel()

    def cancel(self) -> None:
        """Kill running dependency installations, close the cache connections and refuse new
        ones (the cluster is stopping)."""
        with self._lock:
            self._cancelled = True
            procs = list(self._procs)
            clients, self._flight = list(self._flight.values()), {}
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
        for client in clients:
            with contextlib.suppress(Exception):
                client.close()

    def warm_up(self, cache_endpoint: str, timeout: float = 5.0) -> None:
        """Connect to the object cache now (a ``ListActions`` call), so the first bind's
        download does not wait for the connection; failures are left to that download."""
        with contextlib.suppress(Exception):
            parsed = urllib.parse.urlsplit(cache_endpoint)
            import pyarrow.flight as flight

            client = self._flight_client(parsed)
            list(client.list_actions(flight.FlightCallOptions(timeout=timeout)))

    def install(self, app: AppRecord, *, dependencies: bool = True) -> Installation:
        """Make ``app``'s package available and return the environment additions.

        Args:
            app: the application (its ``installer`` and ``url`` matter).
            dependencies: also install declared dependencies missing from the cluster's Python
                (pointless for in-process instances, which cannot see them).

        Raises:
            InstallError: unknown installer, download, extraction or dependency failure.
        """
        if not app.installer:
            return Installation()
        kind = app.installer.strip().lower()
        if kind not in ("python", "binary"):
            raise InstallError(f"Unknown installer type: {app.installer}")
        version = python_version()
        if not app.url:
            return Installation(env={"FLAME_PYTHON_VERSION": version} if kind == "python" else {})
        key = (app.name, kind, app.url)
        with self._lock:
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            app_root = self.root / _safe_name(app.name)
            archive = self._download(app.url, app_root)
            try:
                digest = _sha256(archive)
                if self.releases is None:
                    release, release_lock = app_root / digest[:20], threading.Lock()
                else:
                    release, release_lock = self.releases.release(kind, self.python, digest)
                with release_lock:
                    done = release / ".installed"
                    if not done.exists():
                        shutil.rmtree(release, ignore_errors=True)
                        _extract(archive, release / "src")
                        self.installs += 1
                        done.write_text(app.url)
            finally:
                shutil.rmtree(archive.parent, ignore_errors=True)
            src = release / "src"
            if kind == "binary":
                return Installation(
                    path=(str(src / "bin"), str(src)),
                    env={"FLAME_APP_DIR": str(src)},
                    release=release,
                )
            deps = release / "deps"
            declared = tuple(_declared_dependencies(src))  # read once: pip and the import scope
            if dependencies:
                with release_lock:  # pip runs once per release, whichever cluster asks first
                    self._install_dependencies(app.name, declared, deps)
            paths = [str(deps)] if deps.is_dir() else []
            paths.append(str(src))
            if (src / "src").is_dir():
                paths.append(str(src / "src"))
            bin_dir = [str(deps / "bin")] if (deps / "bin").is_dir() else []
            return Installation(
                pythonpath=tuple(paths),
                path=tuple(bin_dir),
                env={"FLAME_PYTHON_VERSION": version},
                release=release,
                declared=declared,
            )

    # -- download -------------------------------------------------------------------------------

    def _download(self, url: str, app_root: Path) -> Path:
        parsed = urllib.parse.urlsplit(url)
        name = posixpath.basename(urllib.parse.unquote(parsed.path)) or "package"
        target_dir = app_root / f"download-{uuid.uuid4().hex[:12]}"
        target_dir.mkdir(parents=True, exist_ok=True)
        target = target_dir / _safe_name(name)
        try:
            scheme = parsed.scheme.lower()
            if scheme == "file":
                self._download_file(parsed, target)
            elif scheme in ("http", "https"):
                self._download_http(url, target)
            elif scheme in ("grpc", "grpcs"):
                self._download_cache(parsed, target)
            else:
                raise InstallError(f"unsupported scheme: {parsed.scheme or url}")
        except BaseException:
            shutil.rmtree(target_dir, ignore_errors=True)
            raise
        return target

    @staticmethod
    def _download_file(parsed: urllib.parse.SplitResult, target: Path) -> None:
        source = Path(urllib.parse.unquote(parsed.path))
        if not source.is_absolute():
            raise InstallError(f"file URL must name an absolute path: {parsed.geturl()}")
        try:
            shutil.copyfile(source, target)
        except OSError as exc:
            raise InstallError(f"failed to copy package {source}: {exc}") from exc

    @staticmethod
    def _download_http(url: str, target: Path) -> None:
        import httpx

        try:
            with httpx.stream("GET", url, timeout=_DOWNLOAD_TIMEOUT, follow_redirects=True) as response:
                if not 200 <= response.status_code < 300:
                    raise InstallError(f"failed to download package: HTTP {response.status_code}")
                with target.open("wb") as out:
                    for chunk in response.iter_bytes():
                        out.write(chunk)
        except httpx.HTTPError as exc:
            raise InstallError(f"failed to download package: {exc}") from exc

    def _download_cache(self, parsed: urllib.parse.SplitResult, target: Path) -> None:
        import pyarrow as pa
        import pyarrow.flight as flight

        key = parsed.path.lstrip("/")
        if not key or not parsed.hostname:
            raise InstallError(f"package URL names no object: {parsed.geturl()}")
        client = self._flight_client(parsed)
        written = 0
        try:
            options = flight.FlightCallOptions(timeout=_DOWNLOAD_TIMEOUT)
            reader = client.do_get(flight.Ticket(f"{key}:0".encode()), options)
            with target.open("wb") as out:
                for chunk in reader:
                    batch = chunk.data
                    if batch is None or "data" not in batch.schema.names:
                        continue
                    for cell in batch.column("data"):
                        data = cell.as_py()
                        if data:
                            out.write(data)
                            written += len(data)
        except KeyError as exc:  # pyarrow's ArrowKeyError: the cache answered NOT_FOUND
            raise InstallError(f"object not found: {key}") from exc
        except (pa.ArrowException, OSError) as exc:
            raise InstallError(f"do_get failed: {_first_line(exc)}") from exc
        if written == 0:
            raise InstallError(f"object not found: {key}")

    def _flight_client(self, parsed: urllib.parse.SplitResult) -> Any:
        """The connection to the cache ``parsed`` names, opened once per installer: every bind
        of a cluster downloads from the same cache (and a test's first bind is on its critical
        path, so :meth:`warm_up` opens it ahead)."""
        import pyarrow.flight as flight

        tls = parsed.scheme.lower() == "grpcs"
        location = f"{'grpc+tls' if tls else 'grpc'}://{parsed.hostname}:{parsed.port or 9090}"
        with self._lock:
            if self._cancelled:
                raise InstallError("the cluster is stopping")
            client = self._flight.get(location)
            if client is None:
                kwargs: dict[str, Any] = {}
                if tls and self.cache_ca_file:
                    kwargs["tls_root_certs"] = Path(self.cache_ca_file).read_bytes()
                client = self._flight[location] = flight.FlightClient(location, **kwargs)
            return client

    # -- dependencies ---------------------------------------------------------------------------

    def _install_dependencies(self, app: str, declared: tuple[str, ...], deps: Path) -> None:
        missing = [req for req in declared if not _installed(req)]
        if not missing or (deps / ".installed").exists():
            return
        deps.mkdir(parents=True, exist_ok=True)
        log = deps.parent / "pip.log"
        cmd = [
            self.python,
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--target",
            str(deps),
            *missing,
        ]
        with log.open("wb") as out:
            with self._lock:
                if self._cancelled:
                    raise InstallError("the cluster is stopping")
                try:
                    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
                except OSError as exc:
                    out.write(f"cannot run pip: {exc}\n".encode())
                    raise InstallError(_python_install_failed(app, log)) from exc
                self._procs.add(proc)
            try:
                proc.wait(timeout=_PIP_TIMEOUT)
            except subprocess.TimeoutExpired as exc:
                proc.kill()
                proc.wait()
                out.write(f"pip timed out after {_PIP_TIMEOUT} s\n".encode())
                raise InstallError(_python_install_failed(app, log)) from exc
            finally:
                with self._lock:
                    self._procs.discard(proc)
        if proc.returncode != 0:
            with log.open("ab") as out:
                out.write(f"pip exited with {proc.returncode}\n".encode())
            raise InstallError(_python_install_failed(app, log))
        (deps / ".installed").write_text(" ".join(missing))


def _python_install_failed(app: str, log: Path) -> str:
    """v0.6.0's text for a failed Python installation (the app in literal angle brackets)."""
    return f"Python installation failed for app <{app}>. See log: {log}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _safe_name(name: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".")
    return cleaned or "_"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _declared_dependencies(src: Path) -> list[str]:
    pyproject = src / "pyproject.toml"
    if not pyproject.is_file():
        return []
    try:
        import tomllib  # type: ignore[import-not-found,unused-ignore]
    except ImportError:  # pragma: no cover - Python 3.10: tomli if present, else no dependency step
        try:
            import tomli as tomllib  # type: ignore[import-not-found,no-redef,unused-ignore]
        except ImportError:
            return []
    try:
        doc = tomllib.loads(pyproject.read_text())
    except (OSError, ValueError) as exc:
        raise InstallError(f"cannot read {pyproject.name}: {exc}") from exc
    deps = doc.get("project", {}).get("dependencies", [])
    if not isinstance(deps, list):
        raise InstallError("pyproject.toml: project.dependencies must be a list")
    return [d for d in deps if isinstance(d, str) and d.strip()]


def _installed(requirement: str) -> bool:
    match = _REQ_NAME.match(requirement)
    if match is None:
        return False
    try:
        importlib.metadata.distribution(match.group(1))
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


# -- extraction -----------------------------------------------------------------------------------


def _check_member(name: str) -> str:
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        raise InstallError(f"archive member has an absolute path: {name}")
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    if ".." in parts:
        raise InstallError(f"archive member escapes the package directory: {name}")
    return "/".join(parts)


def _inside(root: Path, target: str) -> bool:
    resolved = os.path.normpath(os.path.join(str(root), target))
    return resolved == str(root) or resolved.startswith(str(root) + os.sep)


def _extract(archive: Path, dest: Path) -> None:
    name = archive.name.lower()
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    try:
        if name.endswith((".tar.gz", ".tgz")):
            _extract_tar(archive, root)
        elif name.endswith(".zip"):
            _extract_zip(archive, root)
        else:
            raise InstallError(f"unsupported archive format: {archive.name}")
    except (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError) as exc:
        raise InstallError(f"failed to extract {archive.name}: {exc}") from exc


def _extract_tar(archive: Path, root: Path) -> None:
    with tarfile.open(archive, "r:gz") as tar:
        members = []
        for member in tar.getmembers():
            clean = _check_member(member.name)
            if not clean:
                continue
            if member.issym():
                link_from = posixpath.dirname(clean)
                if member.linkname.startswith("/") or not _inside(
                    root, posixpath.join(link_from, member.linkname)
                ):
                    raise InstallError(f"archive link escapes the package directory: {member.name}")
            elif member.islnk():
                if member.linkname.startswith("/") or not _inside(root, _check_member(member.linkname)):
                    raise InstallError(f"archive link escapes the package directory: {member.name}")
            elif not (member.isfile() or member.isdir()):
                continue  # devices and fifos have no place in a package
            members.append(member)
        if hasattr(tarfile, "data_filter"):
            tar.extractall(root, members=members, filter="data")
        else:  # pragma: no cover - Pythons without extraction filters
            tar.extractall(root, members=members)


def _extract_zip(archive: Path, root: Path) -> None:
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            clean = _check_member(info.filename)
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise InstallError(f"symbolic links are not supported in zip packages: {info.filename}")
            if not clean:
                continue
            target = root / clean
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, target.open("wb") as out:
                shutil.copyfileobj(src, out)
            if mode & 0o111:
                target.chmod(0o755)
