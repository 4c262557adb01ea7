"""Application installation: download schemes, safe extraction, importability, once per version."""

from __future__ import annotations

import http.server
import io
import re
import subprocess
import sys
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from support import eventually

from flamepy_fake._cache._server import FakeObjectCache
from flamepy_fake._control._state import AppRecord
from flamepy_fake._install import Installer, InstallError, ReleaseStore, python_version, shared_release_store
from flamepy_runner._cache import CacheClient
from flamepy_runner._config import FlameConfig


def _tar(
    path: Path, files: dict[str, bytes], *, links: dict[str, str] | None = None, hard: bool = False
) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.LNKTYPE if hard else tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
    return path


def _zip(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


PACKAGE = {
    "pyproject.toml": b'[project]\nname = "demo"\nversion = "0.1"\ndependencies = ["pyyaml>=5"]\n',
    "demo_mod.py": b"VALUE = 42\n",
    "src/inner_mod.py": b"VALUE = 7\n",
}


def app(url: str | None, installer: str | None = "python", name: str = "demo") -> AppRecord:
    return AppRecord(name=name, installer=installer, url=url, command="x")


def _import(paths: tuple[str, ...], module: str) -> str:
    code = f"import sys; sys.path[:0] = {list(paths)!r}; import {module}; print({module}.VALUE)"
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()


@pytest.mark.parametrize("suffix", [".tar.gz", ".tgz", ".zip"])
def test_file_url_archive_becomes_importable(tmp_path: Path, suffix: str) -> None:
    archive = tmp_path / f"demo{suffix}"
    _zip(archive, PACKAGE) if suffix == ".zip" else _tar(archive, PACKAGE)
    installer = Installer(tmp_path / "apps")
    got = installer.install(app(f"file://{archive}"))
    assert _import(got.pythonpath, "demo_mod") == "42"
    assert _import(got.pythonpath, "inner_mod") == "7"  # a src/ layout works too
    assert got.env == {"FLAME_PYTHON_VERSION": python_version()}
    assert not (tmp_path / "apps" / "demo" / "deps").exists()  # pyyaml is importable already


def test_each_version_is_installed_once(tmp_path: Path) -> None:
    archive = _tar(tmp_path / "demo.tar.gz", PACKAGE)
    installer = Installer(tmp_path / "apps")
    threads = [threading.Thread(target=installer.install, args=(app(f"file://{archive}"),)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert installer.installs == 1
    _tar(archive, {**PACKAGE, "demo_mod.py": b"VALUE = 43\n"})  # a changed package, same URL
    got = installer.install(app(f"file://{archive}"))
    assert installer.installs == 2 and _import(got.pythonpath, "demo_mod") == "43"


def test_grpc_url_downloads_from_the_cache(tmp_path: Path) -> None:
    archive = _tar(tmp_path / "demo.tar.gz", PACKAGE)
    with FakeObjectCache() as server, CacheClient(FlameConfig(cache_endpoint=server.endpoint)) as client:
        client.upload_object("demo/pkg/demo.tar.gz", archive)
        installer = Installer(tmp_path / "apps")
        try:
            got = installer.install(app(f"{server.endpoint}/demo/pkg/demo.tar.gz"))
            assert _import(got.pythonpath, "demo_mod") == "42"
            with pytest.raises(InstallError) as missing:
                installer.install(app(f"{server.endpoint}/demo/pkg/missing.tar.gz", name="other"))
            assert str(missing.value) == "object not found: demo/pkg/missing.tar.gz"
        finally:
            installer.cancel()


def test_the_cache_connection_is_opened_once_ahead_and_closed_by_cancel(tmp_path: Path) -> None:
    with FakeObjectCache() as server, CacheClient(FlameConfig(cache_endpoint=server.endpoint)) as client:
        client.upload_object("demo/pkg/demo.tar.gz", _tar(tmp_path / "demo.tar.gz", PACKAGE))
        changed = {**PACKAGE, "demo_mod.py": b"VALUE = 43\n"}
        client.upload_object("other/pkg/other.tar.gz", _tar(tmp_path / "other.tar.gz", changed))
        installer = Installer(tmp_path / "apps")
        installer.warm_up(server.endpoint)
        (location,) = installer._flight  # opened ahead, before any install
        assert location == server.endpoint  # grpc://host:port, as a download names it
        warmed = installer._flight[location]
        installer.install(app(f"{server.endpoint}/demo/pkg/demo.tar.gz"))
        got = installer.install(app(f"{server.endpoint}/other/pkg/other.tar.gz", name="other"))
        assert _import(got.pythonpath, "demo_mod") == "43"
        assert installer._flight == {location: warmed}  # both downloads used it
        installer.cancel()
        assert installer._flight == {}
        with pytest.raises(pa.ArrowException):  # closed, not merely forgotten
            list(warmed.list_actions())
        with pytest.raises(InstallError) as refused:
            installer.install(app(f"{server.endpoint}/demo/pkg/demo.tar.gz", name="late"))
        assert str(refused.value) == "the cluster is stopping"
        installer.warm_up(server.endpoint)  # after cancel: opens nothing, raises nothing
        assert installer._flight == {}


def test_a_warm_up_without_a_cache_leaves_the_error_to_the_download(tmp_path: Path) -> None:
    installer = Installer(tmp_path / "apps")
    try:
        installer.warm_up("grpc://127.0.0.1:1", timeout=2.0)  # nothing listens there: no raise
        assert list(installer._flight) == ["grpc://127.0.0.1:1"]
        with pytest.raises(InstallError) as failed:
            installer.install(app("grpc://127.0.0.1:1/demo/pkg/demo.tar.gz"))
        # Pinned up to gRPC's debug context, whose wording varies between gRPC releases.
        assert str(failed.value).startswith(
            "do_get failed: Flight returned unavailable error, with message: failed to connect to all "
            "addresses; last error: UNKNOWN: ipv4:127.0.0.1:1: Failed to connect to remote host: "
            "Connection refused. "
        )
    finally:
        installer.cancel()


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    root = tmp_path / "www"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_http_url(tmp_path: Path, http_root: tuple[str, Path]) -> None:
    base, root = http_root
    _zip(root / "demo.zip", PACKAGE)
    got = Installer(tmp_path / "apps").install(app(f"{base}/demo.zip"))
    assert _import(got.pythonpath, "demo_mod") == "42"
    with pytest.raises(InstallError, match="HTTP 404"):
        Installer(tmp_path / "apps").install(app(f"{base}/absent.zip"))


@pytest.mark.parametrize(
    ("files", "links", "hard", "message"),
    [
        ({"/etc/evil": b"x"}, None, False, "absolute path"),
        ({"../evil": b"x"}, None, False, "escapes"),
        ({"a/../../evil": b"x"}, None, False, "escapes"),
        ({"ok.py": b""}, {"link": "../../outside"}, False, "link escapes"),
        ({"ok.py": b""}, {"link": "/etc/passwd"}, False, "link escapes"),
        ({"ok.py": b""}, {"link": "../outside"}, True, "escapes"),
    ],
)
def test_unsafe_archives_are_refused(
    tmp_path: Path, files: dict[str, bytes], links: dict[str, str] | None, hard: bool, message: str
) -> None:
    archive = _tar(tmp_path / "evil.tar.gz", files, links=links, hard=hard)
    with pytest.raises(InstallError, match=message):
        Installer(tmp_path / "apps").install(app(f"file://{archive}"))
    assert not (tmp_path / "evil").exists() and not (tmp_path / "outside").exists()


def test_zip_escapes_are_refused(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "evil.zip", {"../evil.py": b"x"})
    with pytest.raises(InstallError, match="escapes"):
        Installer(tmp_path / "apps").install(app(f"file://{archive}"))


def test_links_inside_the_tree_are_fine(tmp_path: Path) -> None:
    archive = _tar(tmp_path / "ok.tar.gz", {"pkg/real.py": b"VALUE = 1\n"}, links={"pkg/alias.py": "real.py"})
    got = Installer(tmp_path / "apps").install(app(f"file://{archive}"))
    assert (Path(got.pythonpath[-1]) / "pkg" / "alias.py").read_text() == "VALUE = 1\n"


@pytest.mark.parametrize(
    ("record", "message"),
    [
        (app("file:///x.tar.gz", installer="conda"), "Unknown installer type: conda"),
        (app("ftp://host/x.tar.gz"), "unsupported scheme: ftp"),
        (app("file:///nonexistent/x.tar.gz"), "failed to copy package"),
    ],
)
def test_install_errors(tmp_path: Path, record: AppRecord, message: str) -> None:
    with pytest.raises(InstallError, match=message):
        Installer(tmp_path / "apps").install(record)


def test_unsupported_archive(tmp_path: Path) -> None:
    (tmp_path / "demo.rar").write_bytes(b"x")
    with pytest.raises(InstallError, match=r"unsupported archive format: demo\.rar"):
        Installer(tmp_path / "apps").install(app(f"file://{tmp_path / 'demo.rar'}"))


def test_no_installer_or_no_url_downloads_nothing(tmp_path: Path) -> None:
    installer = Installer(tmp_path / "apps")
    assert installer.install(app("file:///nonexistent.tar.gz", installer=None)).pythonpath == ()
    assert installer.install(app(None)).env == {"FLAME_PYTHON_VERSION": python_version()}
    assert installer.installs == 0


def test_missing_dependencies_go_through_pip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # No index: pip must fail for a package that is not installed, and the failure is reported.
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    files = {
        **PACKAGE,
        "pyproject.toml": b'[project]\nname = "d"\ndependencies = ["ffx-surely-absent-pkg"]\n',
    }
    archive = _tar(tmp_path / "demo.tar.gz", files)
    with pytest.raises(InstallError) as exc:
        Installer(tmp_path / "apps").install(app(f"file://{archive}"))
    # v0.6.0's text, the app in literal angle brackets; pip's output is in the named log.
    match = re.fullmatch(
        r"Python installation failed for app <demo>\. See log: (/.+/pip\.log)", str(exc.value)
    )
    assert match is not None, str(exc.value)
    log = Path(match.group(1)).read_text()
    assert "ffx-surely-absent-pkg" in log and "pip exited with 1" in log
    # In-process instances skip dependency installation altogether.
    got = Installer(tmp_path / "apps").install(app(f"file://{archive}"), dependencies=False)
    assert _import(got.pythonpath, "demo_mod") == "42"


def _wheel(directory: Path, name: str, module: str, source: str) -> Path:
    """A minimal pure-Python wheel, built by hand (no setuptools, no network)."""
    dist = f"{name.replace('-', '_')}-1.0"
    path = directory / f"{dist}-py3-none-any.whl"
    files = {
        f"{module}/__init__.py": source,
        f"{dist}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n",
        f"{dist}.dist-info/WHEEL": (
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = "".join(f"{f},,\n" for f in files) + f"{dist}.dist-info/RECORD,,\n"
    with zipfile.ZipFile(path, "w") as zf:
        for f, text in files.items():
            zf.writestr(f, text)
        zf.writestr(f"{dist}.dist-info/RECORD", record)
    return path


def test_missing_dependency_is_installed_once_into_the_package_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    _wheel(wheels, "ffx-dep-pkg", "ffx_dep_pkg", "VALUE = 99\n")
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheels))
    files = {
        **PACKAGE,
        "pyproject.toml": b'[project]\nname = "d"\ndependencies = ["ffx-dep-pkg>=1", "pyyaml"]\n',
    }
    archive = _tar(tmp_path / "demo.tar.gz", files)
    installer = Installer(tmp_path / "apps")
    got = installer.install(app(f"file://{archive}"))
    assert _import(got.pythonpath, "ffx_dep_pkg") == "99"
    deps = Path(got.pythonpath[0])
    assert deps.name == "deps" and (deps / "ffx_dep_pkg").is_dir()
    assert not (deps / "yaml").exists()  # importable already: not installed again
    (wheels / "ffx_dep_pkg-1.0-py3-none-any.whl").unlink()  # a second install would now fail
    assert installer.install(app(f"file://{archive}")).pythonpath == got.pythonpath


def test_cancel_kills_a_running_pip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = {**PACKAGE, "pyproject.toml": b'[project]\nname = "d"\ndependencies = ["ffx-never-there"]\n'}
    archive = _tar(tmp_path / "demo.tar.gz", files)
    # A "python" whose pip hangs, standing in for a slow download.
    fake = tmp_path / "slowpython"
    fake.write_text("#!/bin/sh\nexec sleep 60\n")
    fake.chmod(0o755)
    installer = Installer(tmp_path / "apps", python=str(fake))
    errors: list[BaseException] = []

    def run() -> None:
        try:
            installer.install(app(f"file://{archive}"))
        except InstallError as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    eventually(lambda: installer._procs, "pip to start", timeout=30)
    installer.cancel()
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert errors, "the cancelled install must fail"
    match = re.fullmatch(
        r"Python installation failed for app <demo>\. See log: (/.+/pip\.log)", str(errors[0])
    )
    assert match is not None, str(errors[0])
    assert "pip exited with -9" in Path(match.group(1)).read_text()
    with pytest.raises(InstallError, match="stopping"):
        installer.install(app(f"file://{archive}"))


# --------------------------------------------------------------------------- shared releases


def test_installers_sharing_a_store_extract_and_pip_install_each_version_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    _wheel(wheels, "ffx-dep-pkg", "ffx_dep_pkg", "VALUE = 99\n")
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheels))
    files = {**PACKAGE, "pyproject.toml": b'[project]\nname = "d"\ndependencies = ["ffx-dep-pkg>=1"]\n'}
    archive = _tar(tmp_path / "demo.tar.gz", files)
    store = ReleaseStore(tmp_path / "releases")
    first, second = (Installer(tmp_path / f"cluster{n}", releases=store) for n in (1, 2))
    got = first.install(app(f"file://{archive}", name="app-of-test-1"))
    for wheel in wheels.iterdir():  # a second pip run would now fail
        wheel.unlink()
    again = second.install(app(f"file://{archive}", name="app-of-test-2"))  # another cluster, app
    assert again.pythonpath == got.pythonpath
    assert (first.installs, second.installs) == (1, 0)
    assert _import(again.pythonpath, "ffx_dep_pkg") == "99"
    assert again.release is not None and again.release.parent == tmp_path / "releases"
    assert list(tmp_path.glob("cluster*/**/.installed")) == []  # no release of a cluster's own
    _wheel(wheels, "ffx-dep-pkg", "ffx_dep_pkg", "VALUE = 99\n")
    _tar(archive, {**files, "demo_mod.py": b"VALUE = 43\n"})  # changed content: a new release
    changed = second.install(app(f"file://{archive}", name="app-of-test-2"))
    assert second.installs == 1 and changed.release != again.release
    assert _import(changed.pythonpath, "demo_mod") == "43"


def test_a_closed_store_refuses_new_releases_and_removes_what_it_made(tmp_path: Path) -> None:
    archive = _tar(tmp_path / "demo.tar.gz", {"demo_mod.py": b"VALUE = 1\n"})
    store = ReleaseStore()
    got = Installer(tmp_path / "apps", releases=store).install(app(f"file://{archive}"))
    assert got.release is not None
    made = got.release.parent
    assert made.name.startswith("flamepy-fake-releases-")
    store.close()
    store.close()  # idempotent
    assert not made.exists()
    with pytest.raises(InstallError) as raised:
        Installer(tmp_path / "apps", releases=store).install(app(f"file://{archive}"))
    assert str(raised.value) == "the release store was closed"


def test_clusters_share_the_process_release_store_by_default(tmp_path: Path) -> None:
    from flamepy_fake import FakeCluster

    with FakeCluster(work_dir=tmp_path) as one, FakeCluster(work_dir=tmp_path) as two:
        managers = [c._parts.manager for c in (one, two) if c._parts is not None]
        assert len(managers) == 2 and None not in managers
        assert all(m.installer.releases is shared_release_store() for m in managers if m is not None)
