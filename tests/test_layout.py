"""The architecture as a checked rule: stages sit over the library, never on each other (replicate orchestrates)."""

import ast
from pathlib import Path

import emis

PACKAGE = Path(emis.__file__).parent
STAGES = {"organisms", "finetune", "probe", "steer", "transfer", "monitor", "replicate"}


def imported_modules(path: Path) -> set[str]:
    """Every emis module a source file imports (`import a.b`, `from a.b import c` -> a.b and a.b.c)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return {m for m in out if m == "emis" or m.startswith("emis.")}


def module_name(path: Path) -> str:
    return ".".join(("emis", *path.relative_to(PACKAGE).with_suffix("").parts))


def test_every_stage_is_in_the_stages_package():
    found = {p.stem for p in (PACKAGE / "stages").glob("*.py")} - {"__init__", "job"}
    assert found == STAGES


def test_no_stage_imports_another_stage():
    stage_modules = {f"emis.stages.{s}" for s in STAGES}
    for stage in STAGES - {"replicate"}:
        path = PACKAGE / "stages" / f"{stage}.py"
        assert not imported_modules(path) & (stage_modules - {f"emis.stages.{stage}"}), stage
    assert imported_modules(PACKAGE / "stages" / "replicate.py") >= {f"emis.stages.{s}" for s in ("probe", "steer", "transfer")}


def test_the_library_never_imports_a_stage():
    for path in PACKAGE.rglob("*.py"):
        if "stages" in path.relative_to(PACKAGE).parts:
            continue
        stages = {m for m in imported_modules(path) if m.startswith("emis.stages")}
        assert not stages, f"{module_name(path)} imports {stages}"


def test_the_rule_catches_a_stage_import(tmp_path):
    planted = tmp_path / "steer.py"
    planted.write_text("from emis.stages.probe import run_probe\nimport emis.stages.transfer\n")
    assert imported_modules(planted) >= {"emis.stages.probe", "emis.stages.transfer"}
