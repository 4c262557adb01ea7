"""What an instance may import: requirement resolution (``_visible``) and the finder (``_import_scope``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from flamepy_fake._executors import _visible
from flamepy_fake._executors._import_scope import (
    ENV_VAR,
    ImportScope,
    guarded_argv,
    hidden_text,
    instance_scope,
    spawn_env,
    with_program,
    zygote_scope,
)
from flamepy_fake._executors._visible import program_names, visible_names

# -- resolution -------------------------------------------------------------------------------


def _dist(
    site: Path, name: str, requires: list[str], *, top_level: str | None, record: list[str] = ()
) -> None:  # type: ignore[assignment]
    info = site / f"{name.replace('-', '_')}-1.0.dist-info"
    info.mkdir()
    lines = [
        "Metadata-Version: 2.1",
        f"Name: {name}",
        "Version: 1.0",
        *(f"Requires-Dist: {r}" for r in requires),
    ]
    (info / "METADATA").write_text("\n".join(lines) + "\n")
    if top_level is not None:
        (info / "top_level.txt").write_text(top_level)
    (info / "RECORD").write_text("".join(f"{path},,\n" for path in record))


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A site directory of made-up distributions, first on sys.path."""
    root = tmp_path / "site"
    root.mkdir()
    _dist(
        root,
        "ffx-alpha",
        [
            "ffx-beta",
            "ffx-gamma[fast]>=1",
            'ffx-delta ; extra == "one"',
            'ffx-epsilon ; python_version < "3"',
            "ffx-missing",
            "not a requirement !!",
        ],
        top_level="ffx_alpha_mod\n\nnot-an-identifier\n",
    )
    _dist(
        root,
        "ffx-beta",
        ["ffx-alpha"],  # a cycle
        top_level=None,
        record=[
            "ffx_beta_pkg/__init__.py",
            "ffx_beta_single.py",
            "ffx_beta_ext.cpython-311-x86_64-linux-gnu.so",
            "../../bin/ffx-beta-script",
            "ffx_beta-1.0.dist-info/METADATA",
            "__pycache__/ffx_beta_single.cpython-311.pyc",
            "ffx_beta.pth",
        ],
    )
    _dist(root, "ffx-gamma", ['ffx-zeta ; extra == "fast"'], top_level="ffx_gamma\n")
    _dist(root, "ffx-zeta", [], top_level="ffx_zeta\n")
    _dist(root, "ffx-delta", [], top_level="ffx_delta\n")
    _dist(root, "ffx-epsilon", [], top_level="ffx_epsilon\n")
    monkeypatch.syspath_prepend(str(root))
    _visible._resolved.cache_clear()
    _visible._distribution.cache_clear()
    yield root
    _visible._resolved.cache_clear()
    _visible._distribution.cache_clear()


ALPHA = {"ffx_alpha_mod", "ffx_beta_pkg", "ffx_beta_single", "ffx_beta_ext", "ffx_gamma", "ffx_zeta"}


def test_requirements_resolve_transitively_with_markers_and_extras(site: Path) -> None:
    assert visible_names(["ffx-alpha"]) == ALPHA
    assert visible_names(["ffx-alpha[one]"]) == ALPHA | {"ffx_delta"}
    assert visible_names(["  ffx-alpha  ", ""]) == ALPHA


def test_an_extra_adds_only_its_own_requirements(site: Path) -> None:
    assert visible_names(["ffx-gamma"]) == {"ffx_gamma"}
    assert visible_names(["ffx-gamma[fast]"]) == {"ffx_gamma", "ffx_zeta"}
    assert visible_names(["ffx-gamma", "ffx-gamma[fast]"]) == {"ffx_gamma", "ffx_zeta"}


def test_names_are_matched_as_pip_normalises_them(site: Path) -> None:
    assert visible_names(["FFX_Gamma"]) == visible_names(["ffx.gamma"]) == {"ffx_gamma"}


def test_unknown_and_unreadable_requirements_add_nothing(site: Path) -> None:
    # Not installed here: the installer installs them into the package, where they are visible
    # by place. Unreadable: the installer's pip reports it.
    assert (
        visible_names(["ffx-missing", "not a requirement !!", "ffx-epsilon ; python_version < '3'"]) == set()
    )


def test_instance_scopes_per_flmrun() -> None:
    declared = instance_scope("builtin", "app-1", ["hypothesis"], ["/r/src", "/r/deps"])
    assert declared == ImportScope(
        frozenset(
            {
                "hypothesis",
                "sortedcontainers",
                "_hypothesis_ftz_detector",
                "_hypothesis_globals",
                "_hypothesis_pytestplugin",
            }
        ),
        ("/r/src", "/r/deps"),
        "app-1",
        "flamepy 0.6.0 and flamepy-runner with their requirements",
        "builtin",
    )
    builtin = with_program(declared)
    stock = with_program(instance_scope("flamepy", "app-1", [], []))
    assert (builtin.program, stock.program, stock.executor) == ("", "", "flamepy 0.6.0 and its requirements")
    assert {"flamepy", "grpc", "pyarrow", "cloudpickle", "yaml", "bson", "httpx", "pydantic"} <= stock.names
    assert {"flamepy_runner", "flamepy_fake", "jsonschema", "numpy", "pytest"}.isdisjoint(stock.names)
    assert {"flamepy_runner", "jsonschema", "hypothesis", "sortedcontainers"} <= builtin.names
    assert {"numpy", "pytest"}.isdisjoint(builtin.names)
    assert builtin.names == declared.names | program_names("builtin")
    assert program_names("*") == program_names("builtin") > program_names("flamepy")


def test_the_zygote_scope_is_made_without_resolving_anything() -> None:
    assert zygote_scope() == ImportScope(
        frozenset(), (), "", "flamepy 0.6.0 and flamepy-runner with their requirements", "*"
    )
    assert instance_scope("flamepy", "a", [" ", ""], []).names == frozenset()


def test_a_spawned_instance_gets_its_program_names_from_the_cluster() -> None:
    env = {"X": "1", ENV_VAR: instance_scope("flamepy", "a", [], ["/r"]).to_env()}
    spawned = spawn_env(env)
    assert spawned["X"] == "1" and env[ENV_VAR] != spawned[ENV_VAR]
    assert ImportScope.from_env(spawned[ENV_VAR]) == with_program(ImportScope.from_env(env[ENV_VAR]))
    assert spawn_env({"X": "1"}) == {"X": "1"}


# -- the scope --------------------------------------------------------------------------------


def test_a_scope_travels_in_the_environment() -> None:
    scope = ImportScope(frozenset({"b", "a"}), ("/r",), "app", "what it has", "flamepy")
    text = scope.to_env()
    assert json.loads(text) == {
        "names": ["a", "b"],
        "roots": ["/r"],
        "app": "app",
        "executor": "what it has",
        "program": "flamepy",
    }
    assert ImportScope.from_env(text) == scope


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("nope", "Expecting value: line 1 column 1 (char 0)"),
        ('{"roots": []}', "'names'"),
        ("[1]", "list indices must be integers or slices, not str"),
    ],
)
def test_a_bad_scope_is_refused(text: str, why: str) -> None:
    with pytest.raises(ValueError) as err:
        ImportScope.from_env(text)
    assert str(err.value) == f"FLAMEPY_FAKE_IMPORT_SCOPE is not an import scope: {why}"


def test_a_spawned_instance_applies_its_scope_first() -> None:
    env = {ENV_VAR: "{}"}
    module = "flamepy_fake._executors._import_scope"
    assert guarded_argv(["/py", "-m", "prog", "a"], env) == ["/py", "-m", module, "prog", "a"]
    assert guarded_argv(["/py", "-m", "prog"], {}) == ["/py", "-m", "prog"]
    assert guarded_argv(["/bin/tool", "x", "y"], env) == ["/bin/tool", "x", "y"]
    assert guarded_argv(["/py", "-c", "pass"], env) == ["/py", "-c", "pass"]


def test_the_hint_without_a_distribution_names_the_module() -> None:
    assert hidden_text("helper", None, ImportScope(frozenset())) == (
        "flamepy-fake: module 'helper' (found where the tests run, outside the package) is hidden "
        "from this instance: the application does not declare it, and a Flame executor has only "
        "the standard library, its flmrun program's distributions, the package and the "
        "dependencies it declares. If the task needs it, declare it (Runner(..., "
        "dependencies=['helper']) or [project] dependencies in the package's pyproject.toml), or "
        "let instances see the test's whole environment with the cluster option "
        "instance_imports='all'."
    )


# -- the finder, in a fresh interpreter ---------------------------------------------------------

FINDER_SCRIPT = """
import json, os, sys, traceback
from flamepy_fake._executors import _import_scope as scope_module

zygote_finders = sys.path_importer_cache
zygote_count = len(zygote_finders)
finder = scope_module.activate()
report = {"var_left": scope_module.ENV_VAR in os.environ, "fake_loaded": "flamepy_fake" in sys.modules}
# A fresh cache, the old one left whole (not cleared: freeing its finders costs a forked child).
report["fresh_cache"] = sys.path_importer_cache == {} and sys.path_importer_cache is not zygote_finders
report["old_finders_kept"] = zygote_count > 0 and len(zygote_finders) == zygote_count
report["meta_path"] = [type(f).__name__ for f in sys.meta_path]

def attempt(name):
    try:
        __import__(name)
    except ModuleNotFoundError as exc:
        text = "".join(traceback.format_exception(exc))
        return {"error": str(exc), "name": exc.name, "finder_frame": "_import_scope" in text}
    return "ok"

for name in ("inpkg", "outside", "outside", "json", "numpy", "sortedcontainers", "no_such_module_x"):
    report[name] = attempt(name)
report["hidden"] = sorted(finder.hidden)
report["cache_used"] = os.environ["PYTHONPATH"].split(os.pathsep)[0] in sys.path_importer_cache
scope_module.activate({})
report["restored"] = [type(f).__name__ for f in sys.meta_path] == ORIGINAL
report["numpy_after_restore"] = attempt("numpy")
print(json.dumps(report))
"""


def test_the_finder_hides_what_is_outside_the_scope(tmp_path: Path) -> None:
    package = tmp_path / "release" / "src"
    package.mkdir(parents=True)
    (package / "inpkg.py").write_text("VALUE = 1\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "outside.py").write_text("VALUE = 2\n")
    work = tmp_path / "work"
    work.mkdir()
    scope = ImportScope(frozenset({"sortedcontainers"}), (str(package),), "app-9", "what it has")
    original = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, json; print(json.dumps([type(f).__name__ for f in sys.meta_path]))",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=work,
    ).stdout.strip()
    env = {
        **os.environ,
        ENV_VAR: scope.to_env(),
        "PYTHONPATH": os.pathsep.join([str(package), str(elsewhere), *sys.path[1:]]),
    }
    done = subprocess.run(
        [sys.executable, "-c", FINDER_SCRIPT.replace("ORIGINAL", original)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=work,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    missing = {"error": "No module named '{0}'", "name": "{0}", "finder_frame": False}

    def gone(name: str) -> dict[str, object]:
        return {k: (v.format(name) if isinstance(v, str) else v) for k, v in missing.items()}

    assert report == {
        "var_left": False,
        "fake_loaded": False,  # imported before the scope applied, outside it: forgotten
        "fresh_cache": True,
        "old_finders_kept": True,
        "cache_used": True,  # the import system fills the new cache (it reads sys anew)
        "meta_path": ["ScopeFinder"],
        "inpkg": "ok",
        "outside": gone("outside"),
        "json": "ok",
        "numpy": gone("numpy"),
        "sortedcontainers": "ok",
        "no_such_module_x": gone("no_such_module_x"),
        "hidden": ["numpy", "outside"],
        "restored": True,
        "numpy_after_restore": "ok",
    }
    # One hint per hidden module, however often it is imported; none for a module that does
    # not exist anywhere.
    assert done.stderr.splitlines() == [
        hidden_text("outside", None, scope),
        hidden_text("numpy", "numpy", scope),
    ]


def test_a_spawned_program_runs_within_its_scope(tmp_path: Path) -> None:
    (tmp_path / "ffx_scoped_prog.py").write_text(
        textwrap.dedent(
            """
            import sys
            try:
                import numpy
            except ModuleNotFoundError as exc:
                print("hidden:", exc, sys.argv[1:])
            """
        )
    )
    scope = ImportScope(frozenset(), (str(tmp_path),), "app")
    env = {
        **os.environ,
        ENV_VAR: scope.to_env(),
        "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path[1:]]),
    }
    argv = guarded_argv([sys.executable, "-m", "ffx_scoped_prog", "--flag"], env)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=tmp_path, env=env)
    assert (done.returncode, done.stdout) == (0, "hidden: No module named 'numpy' ['--flag']\n")
    assert done.stderr == hidden_text("numpy", "numpy", scope) + "\n"
