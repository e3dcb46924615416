"""The package layout the developers' guide asks for, checked on every commit."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "lfp_mech"
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80
STAGE_PACKAGES = (
    "models",
    "rlhf",
    "divergence",
    "activations",
    "saes",
    "probes",
    "validate",
    "irl",
)


def _modules():
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def test_no_module_over_500_lines():
    long = {
        str(p.relative_to(PACKAGE)): n
        for p in _modules()
        if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


def test_no_function_over_80_lines():
    long = {}
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long[f"{path.relative_to(PACKAGE)}:{node.name}"] = length
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


@pytest.mark.parametrize("stage", STAGE_PACKAGES)
def test_every_stage_is_a_package_with_config_stage_and_results(stage):
    folder = PACKAGE / stage
    for name in ("__init__.py", "config.py", "stage.py", "results.py"):
        assert (folder / name).is_file(), f"lfp_mech/{stage}/{name} is missing"
    tree = ast.parse((folder / "stage.py").read_text())
    assert any(isinstance(n, ast.FunctionDef) and n.name == "run" for n in tree.body)


def test_configs_and_the_cli_import_no_heavy_library():
    """Reading a config (and so every config error of the CLI) needs no torch, TL, SAE-Lens, TRL."""
    code = (
        "import sys, lfp_mech, lfp_mech.runner.config, lfp_mech.runner.cli, lfp_mech.runner.commands;"
        "heavy = [m for m in ('torch', 'transformers', 'transformer_lens', 'sae_lens', 'trl')"
        " if m in sys.modules]; print(','.join(heavy))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "", f"imported at config time: {result.stdout.strip()}"


def test_every_stage_declares_the_stages_it_reads():
    """A stage that reads another's folder (``ctx.stage_dir("name")``) declares it in
    ``requires`` (or reaches it through them) or in ``uses`` (optional inputs): otherwise a
    re-run of that stage would leave it stale on resume."""
    from lfp_mech.runner.registry import STAGES

    by_name = {spec.name: spec for spec in STAGES}

    def upstream(name):
        reached = set()
        for required in by_name[name].requires:
            reached |= {required} | upstream(required)
        return reached

    undeclared = {}
    for spec in STAGES:
        tree = ast.parse((PACKAGE / spec.package / "stage.py").read_text())
        read = {
            node.args[0].value
            for node in ast.walk(tree)
            if isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "stage_dir"
            and node.args
            and isinstance(node.args[0], ast.Constant)
        }
        missing = read - upstream(spec.name) - set(spec.uses) - {spec.name}
        if missing:
            undeclared[spec.name] = sorted(missing)
    assert not undeclared, f"stages read undeclared stages' folders: {undeclared}"
