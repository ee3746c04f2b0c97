"""The dependency rule: domain ← projections ← adapters ← node, ops (arrows point inward)."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ("domain", "projections", "adapters", "node", "ops")
ALLOWED = {
    "domain": {"domain"},
    "projections": {"domain", "projections"},
    "adapters": {"domain", "projections", "adapters", "migrations"},
    "node": {"domain", "projections", "adapters", "node"},
    "ops": {"domain", "projections", "adapters", "ops"},
}


def project_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found |= {n.split(".")[0] for n in names if n.split(".")[0] in (*LAYERS, "migrations")}
    return found


@pytest.mark.parametrize("layer", LAYERS)
def test_layer_imports_only_inward(layer: str) -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(bad)
        for path in (ROOT / layer).rglob("*.py")
        if (bad := project_imports(path) - ALLOWED[layer])
    }
    assert offenders == {}


def test_the_rule_catches_an_outward_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("from adapters.settings import Settings\nimport os\n")
    assert project_imports(module) - ALLOWED["domain"] == {"adapters"}
