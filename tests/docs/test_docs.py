"""The docs site: it builds strictly, its generated reference matches the code, and it renders."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import flamepy_fake
import flamepy_runner
from flamepy_fake._options import ClusterOptions
from flamepy_fake._plugin._options import _OPTION_NAMES

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / ".artifacts"  # kept after the run (git-ignored): the browser's screenshots
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("mkdocs") is None, reason="the docs tools are the [docs] extra: not installed"
)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    out = tmp_path_factory.mktemp("site")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    yield out


def test_the_site_builds_strictly_with_every_page(site: Path) -> None:
    pages = {p.parent.relative_to(site).as_posix() for p in site.rglob("index.html")}
    assert pages == {
        ".",
        "getting-started",
        "runner",
        "testing",
        "cli",
        "executors",
        "differences",
        "reference/plugin",
        "reference/api",
        "development",
    }
    assert not (site / "mkdocs_hooks.py").exists()


def test_the_plugin_reference_lists_every_option_keyword_and_fixture(site: Path) -> None:
    html = (site / "reference" / "plugin" / "index.html").read_text()
    for spec in ClusterOptions.specs():
        assert f"--flame-{spec.flag[2:]}=" in html, spec.name
        assert f"flame_{spec.name}" in html, spec.name
        assert spec.flag in html, spec.name
    for name in _OPTION_NAMES:
        assert f"<code>{name}</code>" in html, name
    for fixture in ("flame_cluster", "flame_config", "flame_env", "flame_runner"):
        assert f"<code>{fixture}</code>" in html, fixture
    for setting in ("--flame-backend=", "--flame-scope=", "--flame-endpoint=", "--flame-autostart"):
        assert setting in html, setting


def test_the_api_reference_documents_every_export(site: Path) -> None:
    html = (site / "reference" / "api" / "index.html").read_text()
    for package in (flamepy_runner, flamepy_fake):
        for name in package.__all__:
            if name.startswith("__"):
                continue
            assert f'id="{package.__name__}.{name}"' in html, f"{package.__name__}.{name}"
    # Public classes built from private bases (FakeCluster's toolkit, CacheClient's files) show
    # the methods they inherit as their own.
    for cls in (flamepy_fake.FakeCluster, flamepy_runner.CacheClient):
        for name in (n for n in dir(cls) if not n.startswith("_")):
            assert f'id="{cls.__module__.split(".")[0]}.{cls.__name__}.{name}"' in html, (cls, name)


def test_an_unknown_generated_section_fails_the_build() -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import mkdocs_hooks
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    with pytest.raises(ValueError) as err:
        mkdocs_hooks.on_page_markdown("<!-- generated: options -->")
    assert str(err.value) == (
        "unknown generated section 'options'; known: cluster-options, plugin-settings, marker, fixtures"
    )


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium here (Debian's package chromium)")
@pytest.mark.parametrize(
    ("page", "expected"),
    [(".", ["Getting started", "Testing guide"]), ("reference/api", ["flamepy_runner", "Runner"])],
)
def test_pages_render_with_their_navigation_in_headless_chromium(
    site: Path, tmp_path: Path, page: str, expected: list[str]
) -> None:
    assert CHROMIUM is not None
    index = site / page / "index.html"
    name = "home" if page == "." else page.replace("/", "-")
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / f"docs-{name}.png"
    shot.unlink(missing_ok=True)
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=1280,900",
    ]
    dom = subprocess.run(
        [CHROMIUM, *flags, "--dump-dom", index.as_uri()], capture_output=True, text=True, timeout=120
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    # The theme's navigation, as the browser built it: every page of the site is in it.
    assert 'class="md-nav' in dom.stdout
    for text in ["Plugin reference", "API reference", *expected]:
        assert text in dom.stdout, text
    snap = subprocess.run(
        [CHROMIUM, *flags, f"--screenshot={shot}", index.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert snap.returncode == 0, snap.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
