"""The documentation cannot drift from the code."""

from __future__ import annotations

import inspect
import re
from typing import Annotated, Literal, Optional

from annotated_types import Ge
from pydantic import Field

from benchsuite.engine import hookspecs
from benchsuite.engine.kinds import KINDS
from benchsuite.engine.registry import load_plugins
from benchsuite.engine.suite import ThetaRange
from benchsuite.reference import _type_name, suite_reference
from tests.conftest import ROOT


def test_suite_reference_matches_the_schema_and_the_builtin_plugins():
    generated = suite_reference(load_plugins(), ROOT / "suites")
    assert (ROOT / "docs" / "suites.md").read_text() == generated, "regenerate: python -m benchsuite.reference > docs/suites.md"


def test_ci_runs_exactly_the_readmes_test_command():
    readme = (ROOT / "README.md").read_text()
    ci_command = (ROOT / ".ci" / "run").read_text().rstrip().splitlines()[-1]
    assert ci_command.endswith("&& pytest"), ci_command
    assert f"```bash\n{ci_command}\n```" in readme, "the README's test command and .ci/run's last line differ"


def test_design_md_module_tables_name_every_module_of_benchsuite_and_no_other():
    """A newcomer looks a module up in design.md's table for its folder; a module moved or added shows here."""
    design = (ROOT / "docs" / "design.md").read_text()
    modules = design[design.index("## The modules") : design.index("## Contracts, each written once")]
    named = set()
    for folder, table in re.findall(r"^### `benchsuite/([\w/]*)`[^\n]*\n(.*?)(?=^### |\Z)", modules, re.M | re.S):
        for first_column in re.findall(r"^\| ([^|]+) \|", table, re.M):
            named.update(folder + name for name in re.findall(r"`([^`]+)`", first_column))
    package = ROOT / "benchsuite"
    assert sorted(name for name in named if not (package / name).exists()) == [], "design.md names modules that do not exist"
    packages = tuple(name for name in named if name.endswith("/"))
    unnamed = [
        path.relative_to(package).as_posix()
        for path in package.rglob("*.py")
        if (path.name != "__init__.py" or path.parent == package)
        and path.relative_to(package).as_posix() not in named
        and not path.relative_to(package).as_posix().startswith(packages)
    ]
    assert sorted(unnamed) == [], "design.md's module tables leave these out"


def test_the_reference_writes_types_as_a_reader_does():
    assert _type_name(Annotated[int, Field(ge=1, le=4096)] | Literal["auto"]) == "int (≥ 1, ≤ 4096) or 'auto'"
    assert _type_name(Optional[Annotated[int, Ge(ge=0)]]) == "int ≥ 0 or null"  # noqa: UP045 - as pydantic reports it
    assert _type_name(tuple[Literal["a", "b"], ...]) == "tuple['a' or 'b', ...]"
    assert _type_name(dict[str, ThetaRange] | None) == "dict[str, ThetaRange] or null"
    page = (ROOT / "docs" / "suites.md").read_text()
    assert not any(word in page for word in ("Annotated", "FieldInfo", "Union[", "Optional[", "typing."))


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
