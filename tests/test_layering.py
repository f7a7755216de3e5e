"""Imports only go downward: every module's rank comes from the table in ARCHITECTURE.md,
and a module may import only modules of a strictly lower rank."""

import ast
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "jaxreg"


def _ranks_from_architecture() -> dict[str, int]:
    """``| rank | `module` | owns |`` rows of ARCHITECTURE.md's table."""
    rows = re.findall(
        r"^\| (\d+) \| `([\w.]+)` \|", (ROOT / "ARCHITECTURE.md").read_text(), flags=re.MULTILINE
    )
    return {name: int(rank) for rank, name in rows}


RANKS = _ranks_from_architecture()


def _module_name(path: pathlib.Path) -> str:
    rel = path.relative_to(SRC).with_suffix("")
    parts = rel.parts
    if parts[0] == "apps":
        return "apps.options" if parts[-1] == "options" else "apps"
    return parts[0]


def _jaxreg_imports(path: pathlib.Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "jaxreg":
                yield from (a.name for a in node.names)
            elif node.module == "jaxreg.apps.options":
                yield "apps.options"
            elif node.module.startswith("jaxreg."):
                yield node.module.split(".")[1]
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            yield (node.module or "").split(".")[0] or "<relative>"
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("jaxreg."):
                    yield a.name.split(".")[1]


MODULES = sorted(p for p in SRC.rglob("*.py") if p.name != "__init__.py" or p.parent != SRC)


def test_every_module_has_a_rank():
    unknown = {_module_name(p) for p in MODULES if p.name != "__init__.py"} - set(RANKS)
    assert not unknown, f"give these modules a rank in RANKS: {sorted(unknown)}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(SRC)))
def test_imports_only_go_down(path):
    if path.name == "__init__.py" and path.parent.name == "apps":
        return
    me = _module_name(path)
    for target in _jaxreg_imports(path):
        if target in ("__version__",):
            continue
        assert target in RANKS, f"{path.name} imports unknown jaxreg module {target!r}"
        if me == "apps" and target == "apps":
            raise AssertionError(f"{path.name}: modules in jaxreg.apps must not import each other")
        assert RANKS[target] < RANKS[me], (
            f"{path.relative_to(SRC)} (rank {RANKS[me]}) imports jaxreg.{target} "
            f"(rank {RANKS[target]}): imports must go to a lower rank"
        )


def test_the_checker_sees_an_upward_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from jaxreg.runner import fit\nimport jaxreg.cli\n")
    assert list(_jaxreg_imports(bad)) == ["runner", "cli"]
