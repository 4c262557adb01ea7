"""MkDocs hook: the reference of fixtures, markers, ini settings and options, generated.

``<!-- generated: NAME -->`` in a page is replaced by the table NAME renders from the code
(:class:`flamepy_fake._options.ClusterOptions`, the plugin's own settings and fixtures), so the
reference cannot drift from what the plugin and the command line accept.
"""

from __future__ import annotations

import inspect
import re
from typing import Any

_MARK = re.compile(r"<!-- generated: ([a-z-]+) -->")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def cluster_options() -> str:
    """Every cluster option: its marker keyword, ``--flame-*`` option, ini setting, CLI flag."""
    from flamepy_fake._options import ClusterOptions

    rows = [
        "| Marker / `FakeCluster` keyword | pytest option and ini setting | `flamepy-fake` flag | Meaning |",
        "|---|---|---|---|",
    ]
    for spec in ClusterOptions.specs():
        cli = f"`{spec.flag}`/`--no-{spec.flag[2:]}`" if spec.switch else f"`{spec.flag} {spec.metavar}`"
        rows.append(
            f"| `{spec.name}` | `--flame-{spec.flag[2:]}={_cell(spec.metavar)}`, `flame_{spec.name}` "
            f"| {_cell(cli)} | {_cell(spec.help_text())} |"
        )
    return "\n".join(rows)


def plugin_settings() -> str:
    """The plugin's own run-wide settings (where clusters come from, their scope, endpoints)."""
    from flamepy_fake._options import ClusterOptions
    from flamepy_fake._plugin._settings import _OPTIONS

    cluster = set(ClusterOptions.names())
    rows = ["| pytest option | ini setting | Meaning |", "|---|---|---|"]
    for name, _, metavar, text in _OPTIONS:
        if name not in cluster:
            flag = "--flame-" + name.replace("_", "-")
            rows.append(f"| `{flag}={_cell(metavar)}` | `flame_{name}` | {_cell(text)} |")
    rows.append(
        "| `--flame-autostart` | `flame_autostart` | one cluster per pytest process, exported to the "
        "whole run (also `FLAMEPY_FAKE_AUTOSTART=1`) |"
    )
    return "\n".join(rows)


def marker() -> str:
    """What ``@pytest.mark.flame`` accepts: every cluster option, then the fixture's own flags."""
    from flamepy_fake._options import ClusterOptions
    from flamepy_fake._plugin._options import _OPTION_NAMES

    specs = {spec.name: spec for spec in ClusterOptions.specs()}
    own = {
        "allow_open_sessions": "do not fail the test when sessions are still open at teardown "
        "(default: False)",
        "allow_unfinished_tasks": "do not fail the test when tasks are pending or running at teardown "
        "(default: False)",
    }
    rows = ["| Keyword | Meaning |", "|---|---|"]
    for name in _OPTION_NAMES:
        text = specs[name].help_text() if name in specs else own[name]
        rows.append(f"| `{name}` | {_cell(text)} |")
    return "\n".join(rows)


def fixtures() -> str:
    """The public fixtures, with their docstrings."""
    from flamepy_fake import plugin

    rows = []
    for _, func in sorted(vars(plugin).items()):
        target = getattr(func, "__wrapped__", func)
        fixture_name = getattr(getattr(func, "_fixture_function_marker", None), "name", None)
        if fixture_name is None or fixture_name.startswith("_"):
            continue
        doc = inspect.getdoc(target) or ""
        rows.append(f"### `{fixture_name}`\n\n{doc}\n")
    return "\n".join(rows)


_GENERATORS = {
    "cluster-options": cluster_options,
    "plugin-settings": plugin_settings,
    "marker": marker,
    "fixtures": fixtures,
}


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    """Replace each ``<!-- generated: NAME -->`` by its table."""

    def render(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in _GENERATORS:
            raise ValueError(f"unknown generated section {name!r}; known: {', '.join(_GENERATORS)}")
        return _GENERATORS[name]()

    return _MARK.sub(render, markdown)
