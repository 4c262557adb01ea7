"""Runner packaging: exclusions, symlinks, generated metadata, size limit, determinism."""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import logging
import os
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from flamepy_fake._control._records import AppRecord
from flamepy_fake._install import Installer, _declared_dependencies
from flamepy_runner import DEFAULT_EXCLUDES, FlameConfig, FlameError, PackageError, UsageError
from flamepy_runner._packaging import (
    DEFAULT_MAX_PACKAGE_SIZE,
    Package,
    PackageCache,
    build_package,
    generated_pyproject,
)

LOGGER = "flamepy_runner._packaging"


def _tree(root: Path, files: dict[str, str | bytes]) -> Path:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return root


def _members(package: Package) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(package.path, "r:gz") as tar:
        return {m.name: m for m in tar.getmembers()}


def _build(root: Path, *extra: str, **kwargs: object) -> Package:
    return build_package("demo", root, excludes=(*DEFAULT_EXCLUDES, *extra), **kwargs)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- exclusions

DEFAULT_CASES = {
    ".venv": ".venv/lib/site.py",
    "venv": "venv/bin/python",
    "__pycache__": "pkg/__pycache__/mod.cpython-311.txt",
    ".pytest_cache": ".pytest_cache/v/cache/lastfailed",
    ".ruff_cache": ".ruff_cache/CACHEDIR.TAG",
    ".mypy_cache": "pkg/.mypy_cache/3.11/x.json",
    "*.egg-info": "src/deep/demo.egg-info/PKG-INFO",
    ".git": ".git/HEAD",
    ".tox": ".tox/py311/log",
    "node_modules": "web/node_modules/left-pad/index.js",
    "*.pyc": "pkg/sub/mod.pyc",
    "*.pyo": "mod.pyo",
    ".DS_Store": "pkg/sub/.DS_Store",
}


def test_default_exclusions_are_the_guides() -> None:
    assert set(DEFAULT_CASES) == set(DEFAULT_EXCLUDES)


@pytest.mark.parametrize(("pattern", "path"), sorted(DEFAULT_CASES.items()))
def test_each_default_exclusion_applies_at_any_depth(tmp_path: Path, pattern: str, path: str) -> None:
    _tree(tmp_path, {path: "x", "keep.py": "x = 1\n", "pkg/keep.py": "y = 2\n"})
    names = _members(_build(tmp_path))
    assert "keep.py" in names and "pkg/keep.py" in names
    top = path.split("/")[0]
    assert not any(n == path or n.startswith(path + "/") for n in names), pattern
    # The excluded entry's own directory does not appear when it held nothing else.
    if pattern in (".venv", "venv", ".pytest_cache", ".ruff_cache", ".git", ".tox"):
        assert top not in names


def test_user_excludes_match_names_relative_paths_and_directories(tmp_path: Path) -> None:
    _tree(
        tmp_path,
        {
            "app.py": "",
            "run.log": "",
            "logs/deep/old.log": "",
            "pkg/secret.txt": "",
            "other/secret.txt": "",
            "data/big.bin": b"\0" * 10,
            "pkg/data/raw.csv": "",
            "notes/data": "a file called data is not a directory",
            "build/out.o": "",
            "pkg/build/keep.txt": "",
        },
    )
    names = _members(_build(tmp_path, "*.log", "pkg/secret.txt", "data/", "/build"))
    assert sorted(n for n in names if not n.endswith(("/", "pyproject.toml"))) == [
        "app.py",
        "logs",
        "logs/deep",
        "notes",
        "notes/data",
        "other",
        "other/secret.txt",
        "pkg",
        "pkg/build",
        "pkg/build/keep.txt",
    ]


def test_package_excludes_from_flame_yaml_apply_without_package_storage(tmp_path: Path) -> None:
    config_file = tmp_path / "flame.yaml"
    config_file.write_text(
        "current-context: flame\n"
        "contexts:\n"
        "  - name: flame\n"
        "    cache:\n"
        '      endpoint: "grpc://127.0.0.1:9090"\n'
        "    package:\n"
        '      excludes: ["*.tmp", "models/"]\n'
    )
    config = FlameConfig.load(config_file, environ={})
    assert config.package_storage is None
    project = _tree(tmp_path / "proj", {"a.py": "", "x.tmp": "", "models/w.bin": "", ".venv/x": ""})
    names = _members(build_package("demo", project, excludes=config.excludes))
    assert set(names) == {"a.py", "pyproject.toml"}


def test_dist_is_excluded_at_the_top_level_only(tmp_path: Path) -> None:
    _tree(tmp_path, {"a.py": "", "dist/old.tar.gz": "", "pkg/dist/keep.txt": ""})
    names = _members(_build(tmp_path))
    assert "dist" not in names and "pkg/dist/keep.txt" in names
    assert not any(n.startswith("dist") for n in names)


def test_entries_are_sorted_depth_first_with_normalised_owners(tmp_path: Path) -> None:
    _tree(tmp_path, {"b.py": "", "a/z.py": "", "a/b/c.py": "", "pyproject.toml": "[project]\n"})
    os.utime(tmp_path / "b.py", (1_700_000_000, 1_700_000_000))
    with tarfile.open(_build(tmp_path).path, "r:gz") as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == ["a", "a/b", "a/b/c.py", "a/z.py", "b.py", "pyproject.toml"]
    assert {(m.uid, m.gid, m.uname, m.gname) for m in members} == {(0, 0, "", "")}
    assert next(m for m in members if m.name == "b.py").mtime == 1_700_000_000


# --------------------------------------------------------------------------- symlinks and specials


def test_symlinks_inside_are_kept_outside_skipped_loops_not_followed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    outside = _tree(tmp_path / "outside", {"secret.txt": "no"})
    project = _tree(tmp_path / "proj", {"pkg/mod.py": "VALUE = 1\n", "pkg/sub/x.py": ""})
    (project / "pkg" / "alias.py").symlink_to("mod.py")
    (project / "absolute_inside").symlink_to(project / "pkg" / "mod.py")
    (project / "pkg" / "sub" / "up").symlink_to("..")  # a loop if followed
    (project / "self").symlink_to("self")  # a link to itself
    (project / "escape").symlink_to(outside / "secret.txt")
    (project / "pkg" / "sneaky").symlink_to("../../outside")
    caplog.set_level(logging.WARNING, LOGGER)
    package = _build(project)
    members = _members(package)
    links = {name: m.linkname for name, m in members.items() if m.issym()}
    assert links == {
        "absolute_inside": "pkg/mod.py",
        "pkg/alias.py": "mod.py",
        "pkg/sub/up": "..",
        "self": "self",
    }
    assert not any(name.startswith("pkg/sub/up/") for name in members)
    assert [r.getMessage() for r in caplog.records] == [
        f"Skipped symbolic link escape -> {outside / 'secret.txt'}: "
        "its target is outside the project directory",
        "Skipped symbolic link pkg/sneaky -> ../../outside: its target is outside the project directory",
    ]
    assert package.files == 3  # mod.py, sub/x.py and the generated pyproject.toml
    # The executor's installer accepts every link it finds.
    installer = Installer(tmp_path / "apps")
    got = installer.install(AppRecord(name="demo", installer="python", url=f"file://{package.path}"))
    assert got.release is not None
    assert (got.release / "src" / "absolute_inside").read_text() == "VALUE = 1\n"


def test_fifos_are_skipped_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _tree(tmp_path, {"a.py": ""})
    os.mkfifo(tmp_path / "pipe")
    caplog.set_level(logging.WARNING, LOGGER)
    assert set(_members(_build(tmp_path))) == {"a.py", "pyproject.toml"}
    assert [r.getMessage() for r in caplog.records] == [
        "Skipped pipe: not a regular file, directory or symbolic link"
    ]


def _vanishing(monkeypatch: pytest.MonkeyPatch, root: Path, *gone: str) -> None:
    """After the walk lists ``root``, remove ``gone`` (files or trees), as a concurrent cleanup
    of the project directory would (a test's cluster stopped in the background)."""
    import shutil

    from flamepy_runner import _packaging

    real_scandir = os.scandir

    def scandir(path: object) -> object:
        if not isinstance(path, str):  # os.scandir is patched for everyone (shutil.rmtree: fds)
            return real_scandir(path)  # type: ignore[call-overload]
        with real_scandir(path) as it:
            listed = list(it)
        if os.path.abspath(path) == str(root.resolve()):
            for name in gone:
                target = root / name
                shutil.rmtree(target) if target.is_dir() else target.unlink()

        class _Listing:
            def __enter__(self) -> list[os.DirEntry[str]]:
                return listed

            def __exit__(self, *exc: object) -> None:
                return None

        return _Listing()

    monkeypatch.setattr(_packaging.os, "scandir", scandir)


def test_entries_removed_while_the_tree_is_walked_are_left_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    project = _tree(tmp_path / "p", {"a.py": "a", "gone.py": "g", "gone_dir/deep/x.py": "x", "z.py": "z"})
    os.symlink("a.py", project / "gone_link")
    _vanishing(monkeypatch, project, "gone.py", "gone_dir", "gone_link")
    caplog.set_level(logging.DEBUG, LOGGER)
    assert set(_members(_build(project))) == {"a.py", "pyproject.toml", "z.py"}
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG] == [
        "Left out gone.py: it was removed while the project was being packaged",
        "Left out gone_dir: it was removed while the project was being packaged",
        "Left out gone_link: it was removed while the project was being packaged",
    ]


def test_a_directory_removed_after_it_was_listed_is_left_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Its entry was stat-ed; the directory went before the walk looked inside it.
    project = _tree(tmp_path / "p", {"a.py": "a", "d/x.py": "x"})
    from flamepy_runner import _packaging

    real_scandir = os.scandir

    def scandir(path: object) -> object:
        if isinstance(path, str) and os.path.basename(path) == "d":
            import shutil

            shutil.rmtree(path)
        return real_scandir(path)  # type: ignore[call-overload]

    monkeypatch.setattr(_packaging.os, "scandir", scandir)
    assert set(_members(_build(project))) == {"a.py", "pyproject.toml", "d"}


def test_a_file_removed_between_the_walk_and_its_packing_is_left_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = _tree(tmp_path / "p", {"a.py": "a", "b.py": "b"})
    from flamepy_runner import _packaging

    real_collect = _packaging._collect

    def collect(root: str, excludes: object) -> object:
        entries = real_collect(root, excludes)  # type: ignore[arg-type]
        (project / "b.py").unlink()
        return entries

    monkeypatch.setattr(_packaging, "_collect", collect)
    package = _build(project)
    assert set(_members(package)) == {"a.py", "pyproject.toml"}
    assert package.files == 2


# --------------------------------------------------------------------------- metadata

EXPECTED_PYPROJECT = """\
# Generated by flamepy_runner: this project has no pyproject.toml, setup.py or setup.cfg.
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "demo"
version = "0.1.0"
dependencies = [
    "numpy>=1.26",
    "pyyaml>=5",
]

[tool.setuptools]
packages = []
py-modules = []
"""


def test_generated_pyproject_when_the_project_has_no_metadata(tmp_path: Path) -> None:
    root = _tree(tmp_path / "demo", {"app.py": "", "pkg/__init__.py": "", "other/__init__.py": ""})
    # Named after the project directory, not the package (Runner) name.
    package = build_package(
        "runner-7", root, excludes=DEFAULT_EXCLUDES, dependencies=["pyyaml>=5", "numpy>=1.26"]
    )
    with tarfile.open(package.path, "r:gz") as tar:
        member = tar.getmember("pyproject.toml")
        text = tar.extractfile(member).read().decode()  # type: ignore[union-attr]
    assert text == EXPECTED_PYPROJECT
    assert member.mode == 0o644 and member.mtime > 0
    assert package.files == 4
    # The fake cluster's installer reads the dependencies from it.
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "pyproject.toml").write_text(text)
    assert _declared_dependencies(tmp_path / "x") == ["numpy>=1.26", "pyyaml>=5"]


def test_generated_pyproject_without_dependencies_and_odd_names() -> None:
    text = generated_pyproject("my app!", [])
    assert 'name = "my-app"' in text and "dependencies = []" in text


@pytest.mark.parametrize("existing", ["pyproject.toml", "setup.py", "setup.cfg"])
def test_existing_metadata_is_kept_and_dependencies_warned_about(
    tmp_path: Path, existing: str, caplog: pytest.LogCaptureFixture
) -> None:
    _tree(tmp_path, {existing: "# the project's own\n", "app.py": ""})
    caplog.set_level(logging.WARNING, LOGGER)
    package = _build(tmp_path, dependencies=["pyyaml"])
    members = _members(package)
    assert "pyproject.toml" not in members or existing == "pyproject.toml"
    with tarfile.open(package.path, "r:gz") as tar:
        assert tar.extractfile(existing).read() == b"# the project's own\n"  # type: ignore[union-attr]
    assert package.files == 2
    assert [r.getMessage() for r in caplog.records] == [
        f"The Runner's dependencies ['pyyaml'] are not applied: the project has its own {existing}; "
        "declare them there instead"
    ]


def test_existing_metadata_without_dependencies_logs_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _tree(tmp_path, {"setup.py": "", "app.py": ""})
    caplog.set_level(logging.WARNING, LOGGER)
    _build(tmp_path)
    assert caplog.records == []


def test_generated_package_installs_with_the_fake_installer(tmp_path: Path) -> None:
    project = _tree(tmp_path / "proj", {"demo_mod.py": "VALUE = 42\n"})
    package = build_package("demo", project, excludes=DEFAULT_EXCLUDES, dependencies=["pyyaml>=5"])
    installer = Installer(tmp_path / "apps")
    got = installer.install(AppRecord(name="demo", installer="python", url=f"file://{package.path}"))
    code = f"import sys; sys.path[:0] = {list(got.pythonpath)!r}; import demo_mod; print(demo_mod.VALUE)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout == "42\n"


@pytest.mark.skipif(importlib.util.find_spec("setuptools") is None, reason="setuptools is not installed")
@pytest.mark.timeout(300)
def test_generated_package_installs_with_pip_target(tmp_path: Path) -> None:
    project = _tree(tmp_path / "proj", {"demo_mod.py": "VALUE = 42\n", "pkg/__init__.py": ""})
    package = build_package("demo-app", project, excludes=DEFAULT_EXCLUDES, dependencies=["pyyaml>=5"])
    src = tmp_path / "src"
    src.mkdir()
    with tarfile.open(package.path, "r:gz") as tar:
        tar.extractall(src, filter="data")
    env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-build-isolation", "--no-deps", "--target",
         str(tmp_path / "target"), str(src)],
        capture_output=True, text=True, env=env, timeout=240, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    installed = sorted(p.name for p in (tmp_path / "target").iterdir())
    assert installed == ["proj-0.1.0.dist-info"]  # metadata only: the tree itself is not copied
    metadata = (tmp_path / "target" / "proj-0.1.0.dist-info" / "METADATA").read_text()
    assert "Requires-Dist: pyyaml>=5" in metadata


# --------------------------------------------------------------------------- size, determinism, errors


def test_package_of_exactly_max_size_passes_and_one_byte_less_fails(tmp_path: Path) -> None:
    files: dict[str, str | bytes] = {f"f{i:02d}.bin": os.urandom(1000 + 100 * i) for i in range(12)}
    _tree(tmp_path, {**files, "pyproject.toml": "[project]\n"})
    size = _build(tmp_path).size
    assert _build(tmp_path, max_size=size).size == size
    (tmp_path / "dist" / "demo.tar.gz").unlink()
    with pytest.raises(PackageError) as err:
        _build(tmp_path, max_size=size - 1)
    listing = "; ".join(f"f{i:02d}.bin ({(1000 + 100 * i) / 1024:.1f} KiB)" for i in range(11, 1, -1))
    assert str(err.value) == (
        f"Package {tmp_path / 'dist' / 'demo.tar.gz'} is {size / 1024:.1f} KiB ({size} bytes), "
        f"over the limit of {(size - 1) / 1024:.1f} KiB ({size - 1} bytes). Largest entries: {listing}. "
        "Leave out what the executors do not need with package.excludes in flame.yaml."
    )
    assert isinstance(err.value, FlameError)
    assert list((tmp_path / "dist").iterdir()) == []  # the oversized archive is gone


def test_default_limit_is_100_mib() -> None:
    assert DEFAULT_MAX_PACKAGE_SIZE == 100 * 1024 * 1024


def test_two_builds_are_byte_identical_and_gzip_level_6(tmp_path: Path) -> None:
    _tree(tmp_path, {"a.py": "print('x')\n" * 1000, "pkg/b.txt": "hello\n", "bin/data": os.urandom(5000)})
    first = _build(tmp_path, dependencies=["x"]).path.read_bytes()
    second = _build(tmp_path, dependencies=["x"]).path.read_bytes()
    assert hashlib.sha256(first).digest() == hashlib.sha256(second).digest()
    assert first[:4] == b"\x1f\x8b\x08\x00"  # gzip, deflate, no file name
    assert first[4:8] == b"\0\0\0\0"  # no timestamp
    assert len(gzip.decompress(first)) % tarfile.RECORDSIZE == 0


def test_size_and_file_count_are_returned_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _tree(tmp_path, {"a.py": "", "b/c.py": "", "b/d/e.txt": "e", "skip.pyc": ""})
    caplog.set_level(logging.INFO, LOGGER)
    package = _build(tmp_path)
    assert package == Package(
        path=tmp_path / "dist" / "demo.tar.gz", size=package.path.stat().st_size, files=4
    )
    assert caplog.records[-1].getMessage() == (
        f"Packaged {tmp_path} into {package.path}: 4 files, {package.size} B"
    )
    assert caplog.records[-1].levelno == logging.INFO


def test_missing_project_directory_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as err:
        build_package("demo", tmp_path / "nope", excludes=())
    assert str(err.value) == f"cannot package project directory {tmp_path / 'nope'}: it does not exist"


@pytest.mark.parametrize("name", ["", "a/b", "..", "x\\y"])
def test_unusable_names_are_usage_errors(tmp_path: Path, name: str) -> None:
    with pytest.raises(UsageError) as err:
        build_package(name, tmp_path, excludes=())
    assert str(err.value) == f"invalid package name {name!r}: it must be a plain file name"


def test_a_failed_build_leaves_no_partial_archive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _tree(tmp_path, {"a.py": "x"})
    from flamepy_runner import _packaging

    def broken(*args: object) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_packaging, "_write", broken)
    with pytest.raises(PackageError) as err:
        _build(tmp_path)
    assert str(err.value) == (
        f"cannot write package {tmp_path / 'dist' / 'demo.tar.gz'}: [Errno 28] No space left on device"
    )
    assert list((tmp_path / "dist").iterdir()) == []


def test_large_files_are_streamed_intact(tmp_path: Path) -> None:
    from flamepy_runner import _packaging

    big = bytes(range(256)) * (_packaging._READ_WHOLE // 256 * 2 + 3)  # over the read-whole size
    _tree(tmp_path, {"big.bin": big, "small.py": "x = 1\n"})
    package = _build(tmp_path)
    with tarfile.open(package.path, "r:gz") as tar:
        assert tar.extractfile("big.bin").read() == big  # type: ignore[union-attr]
        assert tar.extractfile("small.py").read() == b"x = 1\n"  # type: ignore[union-attr]


# --------------------------------------------------------------------------- PackageCache


@pytest.fixture
def packages(tmp_path: Path) -> Iterator[PackageCache]:
    with PackageCache(tmp_path / "packages") as cache:
        yield cache


def _cached(cache: PackageCache, root: Path, name: str = "demo", **kwargs: object) -> Package:
    return cache.build(name, root, excludes=DEFAULT_EXCLUDES, **kwargs)  # type: ignore[arg-type]


def test_an_unchanged_project_is_packaged_once_with_build_packages_bytes(
    tmp_path: Path, packages: PackageCache
) -> None:
    root = _tree(tmp_path / "proj", {"pyproject.toml": "[project]\nname='p'\n", "pkg/mod.py": "x = 1\n"})
    first = _cached(packages, root)
    again = _cached(packages, root, name="other-runner")  # the name is not in the content
    assert again == first
    assert packages.builds == 1
    assert first.path.parent == tmp_path / "packages"
    assert not (root / "dist").exists()  # never written into the project
    assert first.path.read_bytes() == _build(root).path.read_bytes()


@pytest.mark.parametrize(
    "change",
    ["same size, new mtime", "new size", "new file", "removed file", "new mode", "new directory"],
)
def test_any_change_to_what_the_rules_select_gives_a_new_package(
    tmp_path: Path, packages: PackageCache, change: str
) -> None:
    root = _tree(tmp_path / "proj", {"pyproject.toml": "[project]\nname='p'\n", "mod.py": "x = 1\n"})
    first = _cached(packages, root)
    mod = root / "mod.py"
    before = mod.stat()
    if change == "same size, new mtime":
        mod.write_text("x = 2\n")
        os.utime(mod, ns=(before.st_atime_ns, before.st_mtime_ns + 1))  # 1 ns later: still seen
    elif change == "new size":
        mod.write_text("x = 22\n")
        os.utime(mod, ns=(before.st_atime_ns, before.st_mtime_ns))  # size alone tells
    elif change == "new file":
        (root / "extra.py").write_text("")
    elif change == "removed file":
        mod.unlink()
    elif change == "new mode":
        mod.chmod(0o755)
    else:
        (root / "data").mkdir()
    second = _cached(packages, root)
    assert second.path != first.path
    assert packages.builds == 2
    assert first.path.is_file()  # an older package stays until the cache closes
    with tarfile.open(second.path, "r:gz") as tar:
        if change == "same size, new mtime":
            assert tar.extractfile("mod.py").read() == b"x = 2\n"  # type: ignore[union-attr]


def test_changes_the_rules_exclude_reuse_the_package(tmp_path: Path, packages: PackageCache) -> None:
    root = _tree(tmp_path / "proj", {"pyproject.toml": "[project]\nname='p'\n", "pkg/mod.py": "x = 1\n"})
    first = _cached(packages, root)
    # Excluded entries come and go, inside a selected directory too (its mtime moves).
    _tree(root, {"pkg/__pycache__/m.cpython-311.pyc": b"\0", ".git/HEAD": "ref", "dist/old.tar.gz": "x"})
    assert _cached(packages, root) == first
    assert packages.builds == 1


def test_a_generated_pyproject_names_the_project_so_runners_of_any_name_share_its_package(
    tmp_path: Path, packages: PackageCache
) -> None:
    root = _tree(tmp_path / "proj", {"mod.py": "x = 1\n"})
    first = _cached(packages, root, name="test-0a1b2c3d4e")
    assert _cached(packages, root, name="test-5f6a7b8c9d") == first
    assert packages.builds == 1
    with tarfile.open(first.path, "r:gz") as tar:
        text = tar.extractfile("pyproject.toml").read().decode()  # type: ignore[union-attr]
    assert 'name = "proj"' in text.splitlines()
    # The dependencies are part of the content: other dependencies, another package.
    numpy = _cached(packages, root, name="test-0a1b2c3d4e", dependencies=["numpy"])
    assert numpy.path != first.path
    assert packages.builds == 2


def test_a_reused_package_still_obeys_the_size_limit(tmp_path: Path, packages: PackageCache) -> None:
    root = _tree(tmp_path / "proj", {"pyproject.toml": "[project]\nname='p'\n", "mod.py": "x = 1\n"})
    first = _cached(packages, root)
    with pytest.raises(PackageError) as raised:
        _cached(packages, root, max_size=first.size - 1)
    assert str(raised.value) == (
        f"Package {first.path} is {first.size} B ({first.size} bytes), over the limit of "
        f"{first.size - 1} B ({first.size - 1} bytes). Largest entries: pyproject.toml (19 B); "
        "mod.py (6 B). Leave out what the executors do not need with package.excludes in flame.yaml."
    )
    assert _cached(packages, root, max_size=first.size) == first  # the limit itself is allowed


def test_close_removes_the_archives_and_the_directory_it_made(tmp_path: Path) -> None:
    root = _tree(tmp_path / "proj", {"pyproject.toml": "[project]\nname='p'\n"})
    cache = PackageCache()
    package = _cached(cache, root)
    made = package.path.parent
    assert made.name.startswith("flamepy-runner-packages-")
    cache.close()
    assert not made.exists()
    cache.close()  # idempotent
    with pytest.raises(UsageError) as raised:
        _cached(cache, root)
    assert str(raised.value) == "this PackageCache was closed; create a new one"


def test_close_keeps_a_directory_it_was_given(tmp_path: Path) -> None:
    root = _tree(tmp_path / "proj", {"pyproject.toml": "[project]\nname='p'\n"})
    given = tmp_path / "given"
    given.mkdir()
    (given / "mine.txt").write_text("the user's")
    cache = PackageCache(given)
    package = _cached(cache, root)
    cache.close()
    assert not package.path.exists()
    assert sorted(p.name for p in given.iterdir()) == ["mine.txt"]


def test_a_deleted_archive_is_built_again(tmp_path: Path, packages: PackageCache) -> None:
    root = _tree(tmp_path / "proj", {"pyproject.toml": "[project]\nname='p'\n"})
    first = _cached(packages, root)
    first.path.unlink()
    again = _cached(packages, root)
    assert again.path == first.path and again.path.is_file()
    assert packages.builds == 2
