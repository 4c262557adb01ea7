"""Package storage: each scheme against a real server, and the executor's installer downloading the URL."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from flamepy_fake._cache._server import FakeObjectCache
from flamepy_fake._control._records import AppRecord
from flamepy_fake._install import Installer
from flamepy_runner import (
    DEFAULT_EXCLUDES,
    ConfigError,
    FlameConfig,
    NotFoundError,
    PackageError,
    UsageError,
)
from flamepy_runner._cache import CacheClient
from flamepy_runner._packaging import Package, build_package
from flamepy_runner._storage import (
    CacheStorage,
    FileStorage,
    HttpStorage,
    PackageStorage,
    open_storage,
)

if TYPE_CHECKING:
    from tests.conftest import ResourceSnapshot

HINT = "verify that the storage backend is reachable from both the client and executor nodes"


@pytest.fixture(name="package")
def _package(tmp_path: Path) -> Package:
    project = tmp_path / "proj"
    project.mkdir()
    (project / "demo_mod.py").write_text("VALUE = 42\n")
    return build_package("demo", project, excludes=DEFAULT_EXCLUDES)


@pytest.fixture(name="cache")
def _cache() -> Iterator[FakeObjectCache]:
    with FakeObjectCache() as cache:
        yield cache


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _installed_value(tmp_path: Path, url: str) -> str:
    """What the fake executor's installer makes of ``url``: the value of demo_mod.VALUE."""
    installer = Installer(tmp_path / "apps")
    try:
        got = installer.install(AppRecord(name="demo", installer="python", url=url))
    finally:
        installer.cancel()  # closes its cache connection
    code = f"import sys; sys.path[:0] = {list(got.pythonpath)!r}; import demo_mod; print(demo_mod.VALUE)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    return out.stdout.strip()


# --------------------------------------------------------------------------- configuration


def test_no_storage_and_no_cache_endpoint_is_the_guides_error() -> None:
    for endpoint in ("", "  "):
        with pytest.raises(ConfigError) as err:
            open_storage(FlameConfig(cache_endpoint=endpoint), "demo")
        assert str(err.value) == (
            "Storage not configured: set cache.endpoint or package.storage in flame.yaml "
            '(a local setup needs only cache.endpoint: "grpc://127.0.0.1:9090")'
        )


@pytest.mark.parametrize("url", ["s3://bucket/packages", "ftp://host/x"])
def test_unsupported_schemes_are_named_with_the_supported_ones(url: str) -> None:
    scheme = url.split(":")[0]
    with pytest.raises(ConfigError) as err:
        open_storage(FlameConfig(package_storage=url), "demo")
    assert str(err.value) == (
        f"Unsupported package storage scheme {scheme}:// in package.storage {url!r}: "
        "supported schemes are grpc://, grpcs://, file://, http://, https://"
    )


def test_storage_without_a_scheme_is_refused() -> None:
    with pytest.raises(ConfigError) as err:
        open_storage(FlameConfig(package_storage="/shared/packages"), "demo")
    assert str(err.value) == (
        "Unsupported package storage scheme (none) in package.storage '/shared/packages': "
        "supported schemes are grpc://, grpcs://, file://, http://, https://"
    )


def test_file_storage_directory_must_exist(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    with pytest.raises(ConfigError) as err:
        open_storage(FlameConfig(package_storage=f"file://{missing}"), "demo")
    assert str(err.value) == (
        f"Storage directory does not exist: {missing} (for file:// storage, create it on a "
        "filesystem that both the client and executor nodes can access)"
    )
    (tmp_path / "plain").write_text("")
    with pytest.raises(ConfigError) as err:
        open_storage(FlameConfig(package_storage=f"file://{tmp_path / 'plain'}"), "demo")
    assert str(err.value) == f"Storage directory is not a directory: {tmp_path / 'plain'}"


@pytest.mark.parametrize("url", ["file://server/shared", "file://relative", "file://"])
def test_file_storage_needs_a_local_absolute_path(url: str) -> None:
    with pytest.raises(ConfigError) as err:
        open_storage(FlameConfig(package_storage=url), "demo")
    assert str(err.value) == (
        f"package.storage {url!r}: a file:// URL must name an absolute local path, as in file:///shared/packages"
    )


def test_http_storage_needs_a_host() -> None:
    with pytest.raises(ConfigError) as err:
        open_storage(FlameConfig(package_storage="http:///packages"), "demo")
    assert str(err.value) == "package.storage 'http:///packages': the URL names no host"


def test_flame_yaml_selects_the_backend(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    config_file = tmp_path / "flame.yaml"
    config_file.write_text(
        "current-context: flame\n"
        "contexts:\n"
        "  - name: flame\n"
        "    package:\n"
        f'      storage: "file://{shared}"\n'
    )
    with open_storage(FlameConfig.load(config_file, environ={}), "demo") as storage:
        assert isinstance(storage, FileStorage) and isinstance(storage, PackageStorage)
        assert storage.path == shared / "demo.tar.gz"


# --------------------------------------------------------------------------- object cache


def test_cache_storage_round_trip(tmp_path: Path, cache: FakeObjectCache, package: Package) -> None:
    config = FlameConfig(cache_endpoint=cache.endpoint, timeout=20)
    with open_storage(config, "demo") as storage, CacheClient(config) as reader:
        assert isinstance(storage, CacheStorage)
        url = storage.upload(package.path)
        assert url == f"{cache.endpoint}/demo/pkg/demo.tar.gz"
        got = reader.download_object("demo/pkg/demo.tar.gz", tmp_path / "copy.tar.gz")
        assert got.read_bytes() == package.path.read_bytes()
        assert _installed_value(tmp_path, url) == "42"
        storage.delete()
        with pytest.raises(NotFoundError):
            reader.download_object("demo/pkg/demo.tar.gz", tmp_path / "again.tar.gz")
        storage.delete()  # already gone: fine


def test_grpc_package_storage_uses_that_cache(
    tmp_path: Path, cache: FakeObjectCache, package: Package
) -> None:
    config = FlameConfig(cache_endpoint="grpc://127.0.0.1:1", package_storage=cache.endpoint, timeout=20)
    with open_storage(config, "demo") as storage:
        assert storage.upload(package.path) == f"{cache.endpoint}/demo/pkg/demo.tar.gz"
    assert _installed_value(tmp_path, f"{cache.endpoint}/demo/pkg/demo.tar.gz") == "42"


def test_a_given_cache_client_is_used_and_left_open(cache: FakeObjectCache, package: Package) -> None:
    config = FlameConfig(cache_endpoint=cache.endpoint, timeout=20)
    with CacheClient(config) as client:
        with open_storage(config, "demo", cache=client) as storage:
            storage.upload(package.path)
        # Still usable after the storage closed.
        assert client.put_object("demo/s", 1).key.startswith("demo/s/")


def test_own_cache_client_is_closed(
    cache: FakeObjectCache, package: Package, resources: ResourceSnapshot
) -> None:
    # ``resources`` comes last: its snapshot is taken with the cache server already running.
    storage = open_storage(FlameConfig(cache_endpoint=cache.endpoint, timeout=20), "demo")
    storage.upload(package.path)
    storage.delete()
    storage.close()
    storage.close()  # idempotent
    resources.assert_clean()


def test_unreachable_cache_gives_the_guides_hint(package: Package) -> None:
    port = _free_port()
    endpoint = f"grpc://127.0.0.1:{port}"
    storage = open_storage(FlameConfig(cache_endpoint=endpoint, timeout=2), "demo")
    with storage, pytest.raises(PackageError) as err:
        storage.upload(package.path)
    cause = err.value.__cause__
    assert cause is not None
    assert str(err.value) == (
        f"Package upload failed for demo/pkg/demo.tar.gz in the object cache at {endpoint}: "
        f"{cause}; {HINT} (check the object-cache service on port {port})"
    )
    assert err.value.key == "demo/pkg/demo.tar.gz" and err.value.endpoint == endpoint


# --------------------------------------------------------------------------- shared directory


def test_file_storage_round_trip(tmp_path: Path, package: Package) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    with open_storage(FlameConfig(package_storage=f"file://{shared}"), "demo") as storage:
        url = storage.upload(package.path)
        assert url == f"file://{shared}/demo.tar.gz"
        assert sorted(p.name for p in shared.iterdir()) == ["demo.tar.gz"]  # no temporary left
        assert (shared / "demo.tar.gz").read_bytes() == package.path.read_bytes()
        assert _installed_value(tmp_path, url) == "42"
        # A second upload replaces the first (a changed project must not run stale code).
        (shared / "demo.tar.gz").write_bytes(b"stale")
        storage.upload(package.path)
        assert (shared / "demo.tar.gz").read_bytes() == package.path.read_bytes()
        storage.delete()
        assert list(shared.iterdir()) == []
        storage.delete()  # already gone: fine


def test_uploading_a_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    with FileStorage(shared, "demo") as storage, pytest.raises(UsageError) as err:
        storage.upload(tmp_path / "nope.tar.gz")
    assert str(err.value) == (
        f"cannot upload package {tmp_path / 'nope.tar.gz'}: [Errno 2] No such file or directory: "
        f"'{tmp_path / 'nope.tar.gz'}'"
    )


# --------------------------------------------------------------------------- HTTP


def _server_log(base: str) -> list[str]:
    return httpx.get(f"{base}/_log", timeout=10).text.splitlines()


def test_http_storage_round_trip(tmp_path: Path, http_base: str, package: Package) -> None:
    base = f"{http_base}/packages/"
    with open_storage(FlameConfig(package_storage=base, timeout=20), "demo") as storage:
        assert isinstance(storage, HttpStorage)
        url = storage.upload(package.path)
        assert url == f"{http_base}/packages/demo.tar.gz"
        assert httpx.get(url, timeout=10).content == package.path.read_bytes()
        assert _installed_value(tmp_path, url) == "42"
        storage.delete()
        assert httpx.get(url, timeout=10).status_code == 404
        storage.delete()  # 404: already gone, fine
    assert _server_log(http_base) == [
        f"PUT /packages/demo.tar.gz {package.size}",  # streamed with a Content-Length, not chunked
        "GET /packages/demo.tar.gz -",
        "GET /packages/demo.tar.gz -",
        "DELETE /packages/demo.tar.gz -",
        "GET /packages/demo.tar.gz -",
        "DELETE /packages/demo.tar.gz -",
    ]


def test_http_refusals_name_method_url_status_and_body(http_base: str, package: Package) -> None:
    with open_storage(
        FlameConfig(package_storage=f"{http_base}/status/507/pk", timeout=20), "demo"
    ) as storage:
        with pytest.raises(PackageError) as err:
            storage.upload(package.path)
        assert str(err.value) == (
            f"Package upload failed: PUT {http_base}/status/507/pk/demo.tar.gz returned HTTP 507: "
            "injected failure 507"
        )
    with open_storage(
        FlameConfig(package_storage=f"{http_base}/status/500/pk", timeout=20), "demo"
    ) as storage:
        with pytest.raises(PackageError) as err:
            storage.delete()
        assert str(err.value) == (
            f"Package removal failed: DELETE {http_base}/status/500/pk/demo.tar.gz returned HTTP 500: "
            "injected failure 500"
        )


def test_unreachable_http_storage_gives_the_guides_hint(package: Package) -> None:
    url = f"http://127.0.0.1:{_free_port()}/packages"
    with open_storage(FlameConfig(package_storage=url, timeout=5), "demo") as storage:
        for action, method, call in (
            ("upload", "PUT", lambda: storage.upload(package.path)),
            ("removal", "DELETE", storage.delete),
        ):
            with pytest.raises(PackageError) as err:
                call()
            assert isinstance(err.value.__cause__, httpx.ConnectError)
            assert str(err.value) == (
                f"Package {action} failed: {method} {url}/demo.tar.gz: {err.value.__cause__}; {HINT}"
            )


def test_http_upload_past_its_deadline_is_a_package_error(
    http_base: str, package: Package, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flamepy_runner import _storage

    # The whole upload must finish within timeout + size / 4 MiB/s; make that deadline past.
    monkeypatch.setattr(_storage, "_upload_deadline", lambda config, size: -1.0)
    storage = open_storage(FlameConfig(package_storage=http_base, timeout=20), "demo")
    with storage, pytest.raises(PackageError) as err:
        storage.upload(package.path)
    assert str(err.value) == (
        f"Package upload failed: PUT {http_base}/demo.tar.gz: the upload did not finish before its "
        f"deadline; {HINT}"
    )
    assert httpx.get(f"{http_base}/demo.tar.gz", timeout=10).status_code == 404  # nothing was stored


def test_tls_cache_urls_use_the_grpcs_scheme_the_installer_reads(package: Package) -> None:
    from flamepy_runner._cache import ObjectRef

    class TlsCache:
        """Stands in for a CacheClient whose cache advertises a ``grpc+tls`` location."""

        endpoint = "grpcs://cache.example:9443"

        def upload_object(self, key: str, path: object) -> ObjectRef:
            return ObjectRef("grpc+tls://cache.example:9443", key, 1)

    config = FlameConfig(cache_endpoint=TlsCache.endpoint)
    with open_storage(config, "demo", cache=TlsCache()) as storage:  # type: ignore[arg-type]
        assert storage.upload(package.path) == "grpcs://cache.example:9443/demo/pkg/demo.tar.gz"
