"""The documentation cannot drift from the code."""

from __future__ import annotations

import inspect

from benchsuite.engine import hookspecs
from benchsuite.engine.kinds import KINDS
from benchsuite.engine.registry import load_plugins
from benchsuite.reference import suite_reference
from tests.conftest import ROOT


def test_suite_reference_matches_the_schema_and_the_builtin_plugins():
    generated = suite_reference(load_plugins(), ROOT / "suites")
    assert (ROOT / "docs" / "suites.md").read_text() == generated, "regenerate: python -m benchsuite.reference > docs/suites.md"


def test_every_hook_is_documented_for_plugin_authors_and_has_a_docstring():
    tutorial = (ROOT / "docs" / "plugins.md").read_text()
    hooks = [name for name, _ in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("benchsuite_")]
    assert sorted(hooks) == sorted(kind.hook for kind in KINDS)
    for name in hooks:
        assert f"`{name}`" in tutorial
        assert len(inspect.getdoc(getattr(hookspecs, name)) or "") > 80


def test_every_shipped_suite_validates(tmp_path):
    from benchsuite.engine.grid import expand
    from benchsuite.engine.suite import load_suite

    registry = load_plugins()
    for suite in (ROOT / "suites").glob("*.yaml"):
        assert expand(load_suite(suite, registry)), suite
