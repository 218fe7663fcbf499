"""Every config group composes, and every entry point's primary config resolves."""

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from conftest import CONF, ROOT

GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir())
PRIMARIES = ["probe", "steer", "transfer", "replicate", "build_organisms", "finetune", "monitor"]
OWN_PRIMARY = {"finetune", "monitor"}


@pytest.mark.parametrize("group,option", [(g, p.stem) for g in GROUPS for p in sorted((CONF / g).glob("*.yaml"))])
def test_every_option_of_every_group_composes(group, option):
    overrides = [f"{group}={option}"]
    if group == "experiment":
        name = option
    elif group in OWN_PRIMARY:  # stages with their own entry point and primary config
        name = group
    else:
        name = "probe"
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(name, overrides=overrides + [f"paths.root={ROOT}"])
    OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves


@pytest.mark.parametrize("name", PRIMARIES)
def test_entry_point_configs_resolve(name):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(name, overrides=[f"paths.root={ROOT}"])
    resolved = OmegaConf.to_container(cfg, resolve=True)
    if name not in {"build_organisms", "finetune"}:
        assert resolved["experiment"] == name
        assert (ROOT / "experiments" / f"{name}.py").is_file()


def test_groups_mirror_the_stages():
    assert {"model", "experiment", "capture", "steer", "transfer", "judge", "logger", "paths"} <= set(GROUPS)
    assert {p.stem for p in (CONF / "experiment").glob("*.yaml")} == {"probe", "steer", "transfer", "replicate"}
    assert {f"organism-{f}" for f in ("qwen2", "gemma2", "llama", "mistral")} <= {p.stem for p in (CONF / "model").glob("*.yaml")}
