"""Issue 19: an entry point checks its command line before any heavy library loads (`--help` and a bad override
cost little more than importing torch, transformers and hydra), and `import emis` resolves its names on first use."""

import ast
import subprocess
import sys

import pytest
from conftest import ROOT, run_entry

import emis
from emis.stages.job import EXIT_USER_ERROR

# What the stages import and the command line's check must not: each costs seconds at start-up.
HEAVY = {"nnsight", "sklearn", "scipy", "peft", "wandb", "matplotlib", "datasets"}
CHECK = """
import sys
from pathlib import Path
import emis, emis.schemas, emis.stages.job
from emis.schemas import ConfigError
conf = Path("conf").resolve()
try:
    emis.stages.job.check_command_line(conf, "steer", ["steer.layer=oops"])
    raise SystemExit("the bad override passed")
except ConfigError as err:
    assert "steer.layer" in str(err), err
emis.stages.job.check_command_line(conf, "steer", [])
emis.stages.job.check_command_line(conf, "replicate", ["-m", "steer.layer=0,1"])
{then}
print(" ".join(sorted({{m.split(".")[0] for m in sys.modules}} & {heavy!r})))
"""


def heavy_after(then: str = "") -> set[str]:
    """The heavy libraries loaded after the entry point's config check (then `then`), in a fresh interpreter."""
    code = CHECK.format(then=then, heavy=HEAVY)
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return set(result.stdout.split())


def imported(stderr: str) -> set[str]:
    """Every module `-X importtime` (PYTHONPROFILEIMPORTTIME) reports in a process's stderr."""
    return {line.split("|")[-1].strip() for line in stderr.splitlines() if line.startswith("import time:")} - {"package"}


def heavy(modules: set[str]) -> set[str]:
    """The heavy libraries among `modules`."""
    return {m.split(".")[0] for m in modules} & HEAVY


def test_the_config_check_loads_no_heavy_library():
    assert heavy_after() == set()
    assert heavy_after("import emis.stages.steer") >= {"nnsight", "sklearn"}  # the probe sees them when they load


def test_a_bad_override_fails_in_one_line_before_the_stage_loads():
    result = run_entry("steer", ["steer.layer=oops"], env={"PYTHONPROFILEIMPORTTIME": "1"}, timeout=300)
    assert result.returncode == EXIT_USER_ERROR, result.stderr[-2000:]
    lines = [line for line in (result.stdout + result.stderr).splitlines() if "][ERROR]" in line]
    assert len(lines) == 1 and "ConfigError: steer.layer must be an integer or 'all', got 'oops'" in lines[0], lines
    modules = imported(result.stderr)
    assert "emis.stages.job" in modules
    assert "emis.stages.steer" not in modules
    assert heavy(modules) == set()


def test_help_prints_hydra_help_without_the_stage():
    result = run_entry("steer", ["--help"], env={"PYTHONPROFILEIMPORTTIME": "1"}, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "steer is powered by Hydra" in result.stdout and "steer: default, schema" in result.stdout
    modules = imported(result.stderr)
    assert "emis.stages.steer" not in modules
    assert heavy(modules) == set()


@pytest.mark.parametrize("script", sorted((ROOT / "experiments").glob("*.py")), ids=lambda p: p.stem)
def test_experiments_import_their_stage_only_inside_a_function(script):
    top = {node.module for node in ast.parse(script.read_text()).body if isinstance(node, ast.ImportFrom)}
    assert top == {"omegaconf", "emis.stages.job"} | ({"pathlib"} if script.stem == "monitor" else set()), top
    assert f"from emis.stages.{'organisms' if script.stem == 'build_organisms' else script.stem} import" in script.read_text()


def test_import_emis_resolves_its_names_on_first_use():
    code = ("import sys, emis; before = 'emis.api' in sys.modules; emis.load_pair; "
            "print(before, 'emis.api' in sys.modules, set(emis.__all__) <= set(dir(emis)))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.stdout.split() == ["False", "True", "True"], result.stderr[-2000:]
    assert emis.__all__ == sorted(emis.__all__) and len(emis.__all__) == 19
    for name in emis.__all__:  # each the object its module defines
        assert getattr(emis, name) is getattr(sys.modules[emis._HOMES[name]], name), name
    assert emis.DirectionSet.__module__ == "emis.directions" and callable(emis.load_pair)
    assert emis.api.load_pair is emis.load_pair  # a submodule is an attribute, as when `import emis` imported them
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        emis.no_such_name


def test_the_organism_settings_have_one_home():
    """The config check reads the organisms' settings from emis.organisms.settings, the very classes the organism code
    builds (no copies to drift apart), and the organisms' code fingerprint covers that module."""
    from emis.organisms import build, families, sample, settings, train

    assert sample.SamplingConfig is settings.SamplingConfig and train.TrainConfig is settings.TrainConfig
    assert families.ArchSize is settings.ArchSize and build.CheckpointChoice is settings.CheckpointChoice
    assert train.SCHEDULES is settings.SCHEDULES
    assert "emis.organisms.settings" in build.BASE_CODE and "emis.organisms.settings" in build.EVAL_CODE
