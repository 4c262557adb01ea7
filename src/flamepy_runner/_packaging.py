"""Packaging a project directory into ``dist/<name>.tar.gz`` for a Runner application.

The archive is what the executor's installer downloads and extracts: the project tree minus the
exclusions (the setup guide's defaults plus ``package.excludes``), plus a minimal generated
``pyproject.toml`` when the project declares no metadata of its own, so that ``pip install``
(or ``uv pip install``) accepts it and installs the Runner's ``dependencies``.

The archive is deterministic: entries are sorted, owners are normalised and the gzip header
carries no timestamp or file name, so packaging an unchanged tree twice gives identical bytes.
Tar headers come from :mod:`tarfile`; the stream is compressed with :mod:`zlib` at level 6
(what ``tar czf`` gets from gzip), which is several times faster than ``tarfile``'s ``w:gz``
default of level 9.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import functools
import hashlib
import json
import logging
import os
import posixpath
import re
import shutil
import stat
import tarfile
import tempfile
import threading
import uuid
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

from ._exceptions import PackageError, UsageError

__all__ = ["DEFAULT_MAX_PACKAGE_SIZE", "Package", "PackageCache", "build_package", "generated_pyproject"]

log = logging.getLogger(__name__)

#: Packages larger than this (bytes, compressed) are refused unless a larger limit is given.
DEFAULT_MAX_PACKAGE_SIZE = 100 * 1024 * 1024

_BLOCK = tarfile.BLOCKSIZE
_RECORD = tarfile.RECORDSIZE
_GZIP_LEVEL = 6
_GZIP_WBITS = 31  # zlib writes a gzip header with no name and mtime 0: deterministic
_READ_WHOLE = 4 * 1024 * 1024  # files up to this size are read in one call
_CHUNK = 1024 * 1024
_WRITE_BUFFER = 1024 * 1024
_LARGEST_SHOWN = 10
# mtime of the generated pyproject.toml when the package has no other file (1980-01-01, the
# earliest time a zip/wheel can hold).
_FALLBACK_MTIME = 315532800
_METADATA_FILES = ("pyproject.toml", "setup.py", "setup.cfg")
_PROJECT_NAME = re.compile(r"[^A-Za-z0-9._-]+")


@dataclasses.dataclass(frozen=True)
class Package:
    """A built package.

    Attributes:
        path: the archive, ``<project>/dist/<name>.tar.gz``.
        size: bytes of the archive.
        files: regular files packed (a generated ``pyproject.toml`` counts).
    """

    path: Path
    size: int
    files: int


@dataclasses.dataclass(frozen=True)
class _Entry:
    """One archive member: its tar header and, for a regular file, where its bytes are."""

    info: tarfile.TarInfo
    source: str | None = None  # a regular file on disk
    data: bytes | None = None  # generated content
    mtime_ns: int = 0  # the exact mtime (the tar header keeps whole seconds): fingerprints use it


class _Excludes:
    """Glob patterns matched against an entry's name and its relative (posix) path.

    A pattern ending in ``/`` matches directories only; a pattern starting with ``/`` matches
    the relative path only (anchored at the project root).
    """

    def __init__(self, patterns: Sequence[str]) -> None:
        any_kind: list[str] = []
        dirs_only: list[str] = []
        anchored_any: list[str] = []
        anchored_dirs: list[str] = []
        for raw in patterns:
            pattern = raw.strip()
            is_dir = pattern.endswith("/")
            pattern = pattern.rstrip("/")
            anchored = pattern.startswith("/")
            pattern = pattern.lstrip("/")
            if not pattern:
                continue
            target = (
                (anchored_dirs if is_dir else anchored_any)
                if anchored
                else (dirs_only if is_dir else any_kind)
            )
            target.append(fnmatch.translate(pattern))
        self._any = _compile(any_kind)
        self._dirs = _compile(any_kind + dirs_only)
        self._anchored_any = _compile(anchored_any)
        self._anchored_dirs = _compile(anchored_any + anchored_dirs)

    def excluded(self, name: str, relpath: str, is_dir: bool) -> bool:
        """Whether the entry called ``name`` at ``relpath`` is left out."""
        loose, anchored = (self._dirs, self._anchored_dirs) if is_dir else (self._any, self._anchored_any)
        if loose is not None and (loose.match(name) or loose.match(relpath)):
            return True
        return anchored is not None and anchored.match(relpath) is not None


def _compile(translated: list[str]) -> re.Pattern[str] | None:
    return re.compile("|".join(f"(?:{t})" for t in translated)) if translated else None


def generated_pyproject(name: str, dependencies: Sequence[str] = ()) -> str:
    """The minimal ``pyproject.toml`` added to a project that has no package metadata.

    It declares the project (``name``, version ``0.1.0``, the sorted ``dependencies``) and tells
    setuptools to install no modules of its own: the executor puts the extracted tree on
    ``sys.path``, and the installer only has to resolve the dependencies.
    """
    project = _PROJECT_NAME.sub("-", name).strip("._-") or "flame-runner-app"
    deps = sorted({d.strip() for d in dependencies if d.strip()})
    lines = [
        "# Generated by flamepy_runner: this project has no pyproject.toml, setup.py or setup.cfg.",
        "[build-system]",
        'requires = ["setuptools>=61"]',
        'build-backend = "setuptools.build_meta"',
        "",
        "[project]",
        f"name = {json.dumps(project)}",
        'version = "0.1.0"',
    ]
    if deps:
        lines += ["dependencies = [", *(f"    {json.dumps(d)}," for d in deps), "]"]
    else:
        lines.append("dependencies = []")
    lines += ["", "[tool.setuptools]", "packages = []", "py-modules = []", ""]
    return "\n".join(lines)


def build_package(
    name: str,
    project_dir: str | os.PathLike[str],
    *,
    excludes: Sequence[str],
    dependencies: Sequence[str] | None = None,
    max_size: int = DEFAULT_MAX_PACKAGE_SIZE,
) -> Package:
    """Pack ``project_dir`` into ``<project_dir>/dist/<name>.tar.gz``.

    Symbolic links are never followed: a link whose target stays inside the tree is stored as
    a link, any other is skipped with a warning. Sockets, FIFOs and devices are skipped.
    ``dist/`` at the top level is always left out. The archive is written to a temporary file
    and renamed into place, so a failed build leaves no partial archive (an older one stays).

    Args:
        name: the package (and application) name; the archive is ``<name>.tar.gz``.
        project_dir: the directory to pack.
        excludes: glob patterns to leave out, matched against each entry's name and its path
            relative to ``project_dir``; ``dir/`` matches directories only, ``/path`` only
            the path from the root. Pass ``FlameConfig.excludes`` (defaults included).
        dependencies: requirements written to the generated ``pyproject.toml`` (which is
            named after ``project_dir``, not ``name``) when the project has no metadata;
            ignored (with a warning) when it has some.
        max_size: the largest acceptable archive, in bytes.

    Returns:
        The archive's path, size and number of regular files.

    Raises:
        UsageError: ``name`` is not a usable file name, ``max_size`` is not positive, or
            ``project_dir`` is not a directory.
        PackageError: the tree could not be read or the archive written, or the archive is
            larger than ``max_size`` (the message lists its largest entries).
    """
    root, entries = _select(name, project_dir, excludes, dependencies, max_size)
    dist = root / "dist"
    try:
        dist.mkdir(exist_ok=True)
    except OSError as exc:
        raise PackageError(f"cannot create {dist}: {exc}") from exc
    return _write_archive(root, entries, dist / f"{name}.tar.gz", max_size)


class PackageCache:
    """Packages built once per content and shared by the Runners given this cache.

    :meth:`build` walks the project as :func:`build_package` does, and fingerprints what the
    exclusion rules select (each entry's path, kind, mode, size and link target, a file's
    mtime in nanoseconds, and a generated ``pyproject.toml``): an unchanged tree gets the
    archive built before, whatever the Runner is called, and a changed file a new one.
    Archives are written to ``directory`` (a temporary directory by default), never into the
    project, and removed by :meth:`close` (the directory too, when the cache created it). The
    pytest plugin's ``flame_runner`` gives its Runners one cache per run; thread-safe.

    Args:
        directory: where the archives are kept.
    """

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        self._given = None if directory is None else Path(directory)
        self._directory: Path | None = self._given
        self._lock = threading.Lock()
        self._built: dict[str, Package] = {}
        self._closed = False
        self.builds = 0  # archives written so far (observable in tests and benchmarks)

    def build(
        self,
        name: str,
        project_dir: str | os.PathLike[str],
        *,
        excludes: Sequence[str],
        dependencies: Sequence[str] | None = None,
        max_size: int = DEFAULT_MAX_PACKAGE_SIZE,
    ) -> Package:
        """The package of ``project_dir``'s current content, built now only if it is new.

        Arguments, errors and the archive's bytes are those of :func:`build_package`; the
        archive is ``<directory>/<fingerprint>.tar.gz``, owned by the cache (a Runner does not
        delete it at close).

        Raises:
            UsageError: as :func:`build_package`, or the cache was closed.
            PackageError: as :func:`build_package` (a cached archive over ``max_size`` too).
        """
        root, entries = _select(name, project_dir, excludes, dependencies, max_size)
        fingerprint = _fingerprint(root, entries)
        with self._lock:
            if self._closed:
                raise UsageError("this PackageCache was closed; create a new one")
            package = self._built.get(fingerprint)
            if package is not None and package.path.is_file():
                if package.size > max_size:
                    raise PackageError(_too_large(package.path, package.size, max_size, entries))
                log.debug("Reused the package of %s: %s", root, package.path)
                return package
            directory = self._directory
            if directory is None:
                directory = self._directory = Path(tempfile.mkdtemp(prefix="flamepy-runner-packages-"))
            try:
                directory.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise PackageError(f"cannot create {directory}: {exc}") from exc
            package = _write_archive(root, entries, directory / f"{fingerprint[:32]}.tar.gz", max_size)
            self._built[fingerprint] = package
            self.builds += 1
            return package

    def close(self) -> None:
        """Remove the archives (and the directory if the cache made it); idempotent."""
        with self._lock:
            self._closed = True
            built, self._built = list(self._built.values()), {}
            made = self._directory if self._given is None else None
        for package in built:
            with contextlib.suppress(FileNotFoundError):
                package.path.unlink()
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)

    def __enter__(self) -> PackageCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _select(
    name: str,
    project_dir: str | os.PathLike[str],
    excludes: Sequence[str],
    dependencies: Sequence[str] | None,
    max_size: int,
) -> tuple[Path, list[_Entry]]:
    """Check the arguments and list the archive's entries (the project's, a generated
    ``pyproject.toml`` among them when the project has no metadata)."""
    if not name or name in (".", "..") or any(c in name for c in "/\\\0"):
        raise UsageError(f"invalid package name {name!r}: it must be a plain file name")
    if max_size <= 0:
        raise UsageError(f"max_size must be a positive number of bytes, got {max_size}")
    root = Path(project_dir)
    if not root.is_dir():
        what = "is not a directory" if root.exists() else "does not exist"
        raise UsageError(f"cannot package project directory {root}: it {what}")
    root = root.resolve()
    try:
        entries = _collect(str(root), _excludes(tuple(excludes)))
    except OSError as exc:
        raise PackageError(f"cannot package {root}: {exc}") from exc
    extra = _metadata(root, dependencies or ())
    if extra is not None:
        newest = max((e.info.mtime for e in entries if e.info.isfile()), default=_FALLBACK_MTIME)
        info = _info("pyproject.toml", tarfile.REGTYPE, 0o644, int(newest), len(extra))
        generated = _Entry(info, data=extra)
        # Top-level names sort before their children, so insert among the top-level entries.
        index = next(
            (i for i, e in enumerate(entries) if "/" not in e.info.name and e.info.name > info.name),
            len(entries),
        )
        entries.insert(index, generated)
    return root, entries


def _fingerprint(root: Path, entries: list[_Entry]) -> str:
    digest = hashlib.sha256(str(root).encode("utf-8", "surrogateescape"))
    for entry in entries:
        info = entry.info
        # Not a directory's mtime: it moves whenever an excluded file (``__pycache__``, a
        # tool's cache) comes or goes inside it; added and removed entries are seen anyway.
        mtime = 0 if info.isdir() else entry.mtime_ns
        fields = (info.name, info.type.decode(), info.mode, info.size, mtime, info.linkname)
        digest.update(json.dumps(fields, ensure_ascii=False).encode("utf-8", "surrogateescape"))
        if entry.data is not None:
            digest.update(hashlib.sha256(entry.data).digest())
    return digest.hexdigest()


def _write_archive(root: Path, entries: list[_Entry], target: Path, max_size: int) -> Package:
    """Write ``entries`` to ``target`` through a temporary file renamed into place."""
    temp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with temp.open("wb") as out:
            files = _write(entries, out)
        size = temp.stat().st_size
        if size > max_size:
            raise PackageError(_too_large(target, size, max_size, entries))
        os.replace(temp, target)
    except PackageError:
        temp.unlink(missing_ok=True)
        raise
    except OSError as exc:
        temp.unlink(missing_ok=True)
        raise PackageError(f"cannot write package {target}: {exc}") from exc
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    log.info("Packaged %s into %s: %d files, %s", root, target, files, _human(size))
    return Package(path=target, size=size, files=files)


@functools.lru_cache(maxsize=64)
def _excludes(patterns: tuple[str, ...]) -> _Excludes:
    # Translating ~20 globs into regular expressions costs ~0.6 ms, once per Runner otherwise.
    return _Excludes(patterns)


# --------------------------------------------------------------------------- the tree


def _info(
    name: str, kind: bytes, mode: int, mtime: int, size: int = 0, linkname: str = ""
) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.mtime = mtime
    info.size = size
    info.linkname = linkname
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _collect(root: str, excludes: _Excludes) -> list[_Entry]:
    entries: list[_Entry] = []
    _walk(root, root, "", excludes, entries)
    return entries


def _walk(root: str, directory: str, prefix: str, excludes: _Excludes, out: list[_Entry]) -> None:
    try:
        with os.scandir(directory) as it:
            children = sorted(it, key=lambda e: e.name)
    except FileNotFoundError:
        if not prefix:
            raise
        _removed(prefix.rstrip("/"))  # listed, then removed: packed as the empty directory it became
        return
    for child in children:
        relpath = prefix + child.name
        if not prefix and child.name == "dist":
            continue  # where packages are written
        try:
            st = child.stat(follow_symlinks=False)
        except FileNotFoundError:
            # Removed since the directory was listed (a cleanup running beside the build):
            # packed as if the walk had come a moment later.
            _removed(relpath)
            continue
        mode = st.st_mode
        # A link to a directory is excluded like one (isdir is False on loops and dangling links).
        is_dir = os.path.isdir(child.path) if stat.S_ISLNK(mode) else stat.S_ISDIR(mode)
        if excludes.excluded(child.name, relpath, is_dir):
            log.debug("Excluded from the package: %s", relpath)
            continue
        mtime = int(st.st_mtime)
        if stat.S_ISDIR(mode):
            info = _info(relpath, tarfile.DIRTYPE, stat.S_IMODE(mode), mtime)
            out.append(_Entry(info, mtime_ns=st.st_mtime_ns))
            _walk(root, child.path, relpath + "/", excludes, out)
        elif stat.S_ISREG(mode):
            info = _info(relpath, tarfile.REGTYPE, stat.S_IMODE(mode), mtime, st.st_size)
            out.append(_Entry(info, source=child.path, mtime_ns=st.st_mtime_ns))
        elif stat.S_ISLNK(mode):
            linkname = _link_inside(root, child.path, prefix)
            if linkname is None:
                log.warning(
                    "Skipped symbolic link %s -> %s: its target is outside the project directory",
                    relpath,
                    os.readlink(child.path),
                )
                continue
            info = _info(relpath, tarfile.SYMTYPE, 0o777, mtime, linkname=linkname)
            out.append(_Entry(info, mtime_ns=st.st_mtime_ns))
        else:
            log.warning("Skipped %s: not a regular file, directory or symbolic link", relpath)


def _removed(relpath: str) -> None:
    log.debug("Left out %s: it was removed while the project was being packaged", relpath)


def _link_inside(root: str, path: str, prefix: str) -> str | None:
    """The link text to store for the symlink at ``path``, or None when it leaves the tree.

    The link's fully resolved target must be inside ``root``. A relative target that also
    stays inside the tree as written is kept; otherwise (an absolute path, or a detour through
    ``..``) the link is rewritten relative to its own directory, which extractors accept.
    """
    text = os.readlink(path)
    resolved = os.path.realpath(path)
    if resolved != root and not resolved.startswith(root + os.sep):
        return None
    link_dir = prefix.rstrip("/")
    if not os.path.isabs(text):
        lexical = posixpath.normpath(posixpath.join(link_dir, text.replace(os.sep, "/")))
        if lexical != ".." and not lexical.startswith("../"):
            return text
    return os.path.relpath(resolved, os.path.join(root, link_dir)).replace(os.sep, "/")


def _metadata(root: Path, dependencies: Sequence[str]) -> bytes | None:
    present = [f for f in _METADATA_FILES if (root / f).is_file()]
    if not present:
        # Named after the project, not the Runner: the same tree is the same package whatever
        # the application is called, so a PackageCache (and the fake's release store) reuse it
        # across Runners. Names never clash: Flame installs each release into its own target.
        text = generated_pyproject(root.name, dependencies)
        log.info("Added a generated pyproject.toml (dependencies: %s)", sorted(set(dependencies)) or "none")
        return text.encode()
    if any(d.strip() for d in dependencies):
        log.warning(
            "The Runner's dependencies %s are not applied: the project has its own %s; "
            "declare them there instead",
            sorted(dependencies),
            " and ".join(present),
        )
    return None


# --------------------------------------------------------------------------- the archive


class _GzipWriter:
    """Buffers tar bytes and writes them gzip-compressed (level 6) to ``out``."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._zip = zlib.compressobj(_GZIP_LEVEL, zlib.DEFLATED, _GZIP_WBITS)
        self._pending: list[bytes] = []
        self._pending_size = 0
        self.offset = 0  # uncompressed bytes so far

    def write(self, data: bytes) -> None:
        self._pending.append(data)
        self._pending_size += len(data)
        self.offset += len(data)
        if self._pending_size >= _WRITE_BUFFER:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
            self._pending, self._pending_size = [], 0
            self._out.write(self._zip.compress(data))

    def close(self) -> None:
        self._flush()
        self._out.write(self._zip.flush())


def _write(entries: list[_Entry], out: BinaryIO) -> int:
    gz = _GzipWriter(out)
    files = 0
    for entry in entries:
        info = entry.info
        if entry.data is not None:
            gz.write(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))
            gz.write(entry.data)
            files += 1
        elif entry.source is not None:
            if not _write_file(gz, entry):
                continue
            files += 1
        else:
            gz.write(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))
        remainder = gz.offset % _BLOCK
        if remainder:
            gz.write(bytes(_BLOCK - remainder))
    gz.write(bytes(2 * _BLOCK))  # end-of-archive marker
    remainder = gz.offset % _RECORD
    if remainder:
        gz.write(bytes(_RECORD - remainder))
    gz.close()
    return files


def _write_file(gz: _GzipWriter, entry: _Entry) -> bool:
    """Pack one regular file; False (nothing written) when it was removed since the walk."""
    info, source = entry.info, entry.source
    assert source is not None
    try:
        f = open(source, "rb")  # noqa: SIM115  (closed by the with below)
    except FileNotFoundError:
        _removed(info.name)
        return False
    with f:
        if info.size <= _READ_WHOLE:
            data = f.read(_READ_WHOLE + 1)
            if len(data) > _READ_WHOLE:
                raise PackageError(f"{info.name} changed while it was being packaged; try again")
            info.size = len(data)  # a small file that changed since the walk is packed as it is now
            gz.write(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))
            gz.write(data)
            return True
        gz.write(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))
        left = info.size
        while left:
            chunk = f.read(min(_CHUNK, left))
            if not chunk:
                raise PackageError(f"{info.name} changed while it was being packaged; try again")
            gz.write(chunk)
            left -= len(chunk)
    return True


def _human(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    value = float(size)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            break
    return f"{value:.1f} {unit}"


def _too_large(target: Path, size: int, max_size: int, entries: list[_Entry]) -> str:
    sized = [(e.info.size, e.info.name) for e in entries if e.info.isfile()]
    largest = sorted(sized, key=lambda item: (-item[0], item[1]))[:_LARGEST_SHOWN]
    listing = "; ".join(f"{name} ({_human(n)})" for n, name in largest)
    return (
        f"Package {target} is {_human(size)} ({size} bytes), over the limit of {_human(max_size)} "
        f"({max_size} bytes). Largest entries: {listing}. "
        "Leave out what the executors do not need with package.excludes in flame.yaml."
    )
