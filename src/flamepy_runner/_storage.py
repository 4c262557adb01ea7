"""Package storage: where a Runner puts its package so the executors can download it.

``package.storage`` in flame.yaml picks the backend by URL scheme; without it the package goes
to the object cache at ``cache.endpoint``:

==================  =========================================  ==================================
scheme              stored at                                  URL handed to the executor
==================  =========================================  ==================================
``grpc``/``grpcs``  cache key ``<app>/pkg/<app>.tar.gz``       ``<cache endpoint>/<key>``
``file``            ``<dir>/<app>.tar.gz`` (dir must exist)    ``file://<dir>/<app>.tar.gz``
``http``/``https``  ``PUT <base>/<app>.tar.gz``                ``<base>/<app>.tar.gz``
==================  =========================================  ==================================

Every backend is a context manager; :meth:`PackageStorage.delete` removes what
:meth:`PackageStorage.upload` stored and is not an error when it is already gone.
"""

from __future__ import annotations

import abc
import os
import shutil
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from ._config import FlameConfig
from ._exceptions import ClusterError, ConfigError, PackageError, UsageError

if TYPE_CHECKING:
    import httpx

    from ._cache import CacheClient

__all__ = [
    "CacheStorage",
    "FileStorage",
    "HttpStorage",
    "PackageStorage",
    "open_storage",
]

#: The schemes ``package.storage`` may use.
SUPPORTED_SCHEMES = ("grpc", "grpcs", "file", "http", "https")
#: What users are told when neither ``cache.endpoint`` nor ``package.storage`` is set.
STORAGE_NOT_CONFIGURED = (
    "Storage not configured: set cache.endpoint or package.storage in flame.yaml "
    '(a local setup needs only cache.endpoint: "grpc://127.0.0.1:9090")'
)
_REACHABLE_HINT = "verify that the storage backend is reachable from both the client and executor nodes"
# Uploads get config.timeout plus the time to send the package at this worst-case rate.
_SLOWEST_RATE = 4 * 1024 * 1024
_HTTP_CHUNK = 1024 * 1024
_BODY_SHOWN = 200


def _package_name(app_name: str) -> str:
    return f"{app_name}.tar.gz"


def _upload_deadline(config: FlameConfig, size: int) -> float:
    return config.timeout + size / _SLOWEST_RATE


def _package_size(package: Path) -> int:
    try:
        st = package.stat()
    except OSError as exc:
        raise UsageError(f"cannot upload package {package}: {exc}") from exc
    if not package.is_file():
        raise UsageError(f"cannot upload package {package}: not a regular file")
    return st.st_size


class PackageStorage(abc.ABC):
    """Where one Runner application's package is stored.

    Use as a context manager, or call :meth:`close` when done.
    """

    @abc.abstractmethod
    def upload(self, package: Path) -> str:
        """Store ``package`` (replacing an earlier upload) and return the URL executors download.

        Raises:
            UsageError: ``package`` is not a readable file.
            PackageError: the backend refused the package or could not be reached.
        """

    @abc.abstractmethod
    def delete(self) -> None:
        """Remove what :meth:`upload` stored; a package that is already gone is fine.

        Raises:
            PackageError: the backend refused the removal or could not be reached.
        """

    def close(self) -> None:  # noqa: B027 - backends without connections have nothing to close
        """Release connections the storage opened itself (idempotent)."""

    def __enter__(self) -> PackageStorage:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class CacheStorage(PackageStorage):
    """Packages in a Flame object cache, under key ``<app>/pkg/<app>.tar.gz``.

    Args:
        config: deadlines and the cache's CA file.
        app_name: the application the package belongs to.
        endpoint: the cache, ``grpc://host:port`` or ``grpcs://host:port``.
        cache: a client for ``endpoint`` to use (and leave open); by default the storage opens
            its own and closes it in :meth:`close`.
    """

    def __init__(
        self, config: FlameConfig, app_name: str, endpoint: str, *, cache: CacheClient | None = None
    ) -> None:
        self._endpoint = endpoint.rstrip("/")
        self.key = f"{app_name}/pkg/{_package_name(app_name)}"
        if cache is not None and cache.endpoint.rstrip("/") == self._endpoint:
            self._cache, self._owned = cache, False
        else:
            from ._cache import CacheClient

            self._cache = CacheClient(config.replace(cache_endpoint=self._endpoint), max_cached_objects=0)
            self._owned = True

    def _failed(self, action: str, exc: ClusterError) -> PackageError:
        port = urllib.parse.urlsplit(self._endpoint).port or 9090
        return PackageError(
            f"Package {action} failed for {self.key} in the object cache at {self._endpoint}: "
            f"{exc.message}; {_REACHABLE_HINT} (check the object-cache service on port {port})",
            endpoint=self._endpoint,
            key=self.key,
        )

    def upload(self, package: Path) -> str:
        """Upload ``package`` to the cache; the URL is ``<endpoint>/<app>/pkg/<app>.tar.gz``."""
        _package_size(Path(package))
        try:
            ref = self._cache.upload_object(self.key, package)
        except ClusterError as exc:
            raise self._failed("upload", exc) from exc
        endpoint = ref.endpoint.rstrip("/")
        if endpoint.startswith("grpc+tls://"):  # a URL the installer understands
            endpoint = "grpcs://" + endpoint[len("grpc+tls://") :]
        return f"{endpoint}/{ref.key}"

    def delete(self) -> None:
        """Delete the package's key from the cache."""
        try:
            self._cache.delete_objects(self.key)
        except ClusterError as exc:
            raise self._failed("removal", exc) from exc

    def close(self) -> None:
        """Close the cache client if this storage opened it."""
        if self._owned:
            self._cache.close()


class FileStorage(PackageStorage):
    """Packages in a shared directory, as ``<dir>/<app>.tar.gz``.

    Args:
        directory: an existing directory that the executors can read too.
        app_name: the application the package belongs to.

    Raises:
        ConfigError: ``directory`` does not exist or is not a directory.
    """

    def __init__(self, directory: str | os.PathLike[str], app_name: str) -> None:
        path = Path(directory)
        if not path.exists():
            raise ConfigError(
                f"Storage directory does not exist: {path} (for file:// storage, create it on a "
                "filesystem that both the client and executor nodes can access)"
            )
        if not path.is_dir():
            raise ConfigError(f"Storage directory is not a directory: {path}")
        self.path = path.absolute() / _package_name(app_name)

    def upload(self, package: Path) -> str:
        """Copy ``package`` into the directory (written aside, then renamed into place)."""
        _package_size(Path(package))
        temp = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex[:12]}.tmp")
        try:
            shutil.copyfile(package, temp)
            os.replace(temp, self.path)
        except OSError as exc:
            temp.unlink(missing_ok=True)
            raise PackageError(f"Package upload failed: cannot copy {package} to {self.path}: {exc}") from exc
        return "file://" + urllib.parse.quote(str(self.path))

    def delete(self) -> None:
        """Remove the copied package."""
        try:
            self.path.unlink(missing_ok=True)
        except OSError as exc:
            raise PackageError(f"Package removal failed: cannot remove {self.path}: {exc}") from exc


class HttpStorage(PackageStorage):
    """Packages on an HTTP server that accepts ``PUT``, ``GET`` and ``DELETE`` of ``<base>/<file>``.

    Args:
        config: ``timeout`` bounds each request (connect, each read and write); an upload as a
            whole must also finish within ``timeout`` plus its size at 4 MiB/s.
        base: the storage URL, ``http(s)://host[:port]/path``.
        app_name: the application the package belongs to.
    """

    def __init__(self, config: FlameConfig, base: str, app_name: str) -> None:
        import httpx

        self._config = config
        self.url = f"{base.rstrip('/')}/{urllib.parse.quote(_package_name(app_name))}"
        self._client: httpx.Client = httpx.Client(timeout=httpx.Timeout(config.timeout))

    def _status_error(self, method: str, response: httpx.Response) -> PackageError:
        body = response.text[:_BODY_SHOWN].strip()
        action = "upload" if method == "PUT" else "removal"
        text = f"Package {action} failed: {method} {self.url} returned HTTP {response.status_code}"
        return PackageError(text + (f": {body}" if body else ""), endpoint=self.url)

    def _transport_error(self, method: str, exc: Exception) -> PackageError:
        action = "upload" if method == "PUT" else "removal"
        detail = str(exc) or type(exc).__name__
        return PackageError(
            f"Package {action} failed: {method} {self.url}: {detail}; {_REACHABLE_HINT}", endpoint=self.url
        )

    def upload(self, package: Path) -> str:
        """``PUT`` the package, streamed from the file; any 2xx answer is success."""
        import httpx

        path = Path(package)
        size = _package_size(path)
        deadline = time.monotonic() + _upload_deadline(self._config, size)

        def body() -> Iterator[bytes]:
            with path.open("rb") as f:
                while chunk := f.read(_HTTP_CHUNK):
                    if time.monotonic() > deadline:
                        raise httpx.WriteTimeout("the upload did not finish before its deadline")
                    yield chunk

        try:
            response = self._client.put(
                self.url,
                content=body(),
                headers={"Content-Length": str(size), "Content-Type": "application/gzip"},
            )
        except (httpx.HTTPError, OSError) as exc:
            raise self._transport_error("PUT", exc) from exc
        if not response.is_success:
            raise self._status_error("PUT", response)
        return self.url

    def delete(self) -> None:
        """``DELETE`` the package; 404 (already gone) is fine."""
        import httpx

        try:
            response = self._client.delete(self.url)
        except httpx.HTTPError as exc:
            raise self._transport_error("DELETE", exc) from exc
        if not response.is_success and response.status_code != 404:
            raise self._status_error("DELETE", response)

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._client.close()


def open_storage(config: FlameConfig, app_name: str, *, cache: CacheClient | None = None) -> PackageStorage:
    """The package storage ``config`` selects for ``app_name``.

    Args:
        config: ``package_storage`` picks the backend; without it, the object cache at
            ``cache_endpoint`` is used.
        app_name: the application whose package is stored.
        cache: a client for the object cache, used (and left open) when the package goes to
            that same cache; otherwise the storage opens its own and closes it in ``close()``.

    Raises:
        ConfigError: no storage is configured, the scheme is unsupported, or a ``file://``
            directory does not exist.
    """
    storage = (config.package_storage or "").strip()
    if not storage:
        endpoint = (config.cache_endpoint or "").strip()
        if not endpoint:
            raise ConfigError(STORAGE_NOT_CONFIGURED)
        return CacheStorage(config, app_name, endpoint, cache=cache)
    parsed = urllib.parse.urlsplit(storage)
    scheme = parsed.scheme.lower()
    if scheme in ("grpc", "grpcs"):
        return CacheStorage(config, app_name, storage, cache=cache)
    if scheme == "file":
        if parsed.netloc not in ("", "localhost") or not parsed.path.startswith("/"):
            raise ConfigError(
                f"package.storage {storage!r}: a file:// URL must name an absolute local path, "
                "as in file:///shared/packages"
            )
        return FileStorage(urllib.parse.unquote(parsed.path), app_name)
    if scheme in ("http", "https"):
        if not parsed.netloc:
            raise ConfigError(f"package.storage {storage!r}: the URL names no host")
        return HttpStorage(config, storage, app_name)
    supported = ", ".join(f"{s}://" for s in SUPPORTED_SCHEMES)
    raise ConfigError(
        f"Unsupported package storage scheme {scheme + '://' if scheme else '(none)'} in "
        f"package.storage {storage!r}: supported schemes are {supported}"
    )
