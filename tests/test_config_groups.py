"""Every config group composes, and every entry point's primary config resolves."""

import re

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

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
    assert resolved["experiment"] == name  # every entry point runs through emis.stages.job.run_job
    assert (ROOT / "experiments" / f"{name}.py").is_file()


def test_groups_mirror_the_stages():
    assert {"model", "experiment", "capture", "steer", "transfer", "judge", "logger", "paths"} <= set(GROUPS)
    assert {p.stem for p in (CONF / "experiment").glob("*.yaml")} == {"probe", "steer", "transfer", "replicate"}
    assert {f"organism-{f}" for f in ("qwen2", "gemma2", "llama", "mistral")} <= {p.stem for p in (CONF / "model").glob("*.yaml")}



def leaves(node, prefix=""):
    """(dotted key, raw value) of every leaf of a config, interpolations unresolved."""
    for key in node:
        child = node._get_node(key)
        if isinstance(child, DictConfig):
            yield from leaves(child, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", child._value()


def aliases(cfg) -> list[str]:
    """Keys whose whole value is another group's setting (`a: ${other.b}`): two names for one setting. A location
    built from settings (`${paths.organisms}/seed${organisms.seed}/...`) is derived, not an alias."""
    out = []
    for key, value in leaves(cfg):
        ref = re.fullmatch(r"\$\{([^}]+)\}", value) if isinstance(value, str) else None
        if ref and not ref.group(1).startswith((".", "oc.env:", "hydra:", "now:", "paths.")) and ref.group(1).split(".")[0] != key.split(".")[0]:
            out.append(f"{key} = {value}")
    return out


@pytest.mark.parametrize("name", PRIMARIES)
def test_each_setting_has_one_home(name):
    """No group holds another group's setting (evaluation settings in `eval`, selection and controls in their own
    groups, no single `model` beside `models`), and no key aliases another group's setting."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(name, overrides=[f"paths.root={ROOT}"])
        planted = compose(name, overrides=[f"paths.root={ROOT}", "+planted=${paths.root}", "+copy=${experiment}" if "experiment" in cfg else "+copy=${paths.root}"])
    for group, foreign in (("steer", {"sampling", "n_prompts", "prompts", "selection", "controls", "match"}),
                           ("transfer", {"controls", "selection", "sampling"}), ("eval", {"temperature", "max_new_tokens"})):
        if group in cfg:
            assert not foreign & set(cfg[group]), (group, foreign & set(cfg[group]))
    assert not ("model" in cfg and "models" in cfg)
    assert aliases(cfg) == []
    assert aliases(planted) == ([] if "experiment" not in cfg else ["copy = ${experiment}"])  # the check can fail


def test_schemas_refuse_wrong_types_and_unknown_keys():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        for bad in ("separation.n_bootstrap=many", "eval.sampling.max_new_tokens=1.5", "controls.match.rounds=two",
                    "selection.share=half", "controls.n_randon=5"):
            with pytest.raises(Exception, match="override|Value|merging|Could not"):
                compose("steer", overrides=[bad, f"paths.root={ROOT}"])
        study = compose("steer", overrides=["eval=study", f"paths.root={ROOT}"])
    assert study.eval.sampling.max_new_tokens == 600 and study.eval.questions.endswith("first_plot_questions.yaml")
    assert study.eval.n_prompts == 240  # the rest of the group from eval/default


def numeric_leaves(cfg) -> list[str]:
    """Dotted keys of every int or float setting (lists of numbers as one key) of the checked groups."""
    from emis.schemas import CHECKED

    out = []
    for key, value in leaves(cfg):
        if key.split(".")[0] not in CHECKED:
            continue
        resolved = OmegaConf.select(cfg, key)
        if isinstance(resolved, (int, float)) and not isinstance(resolved, bool):
            out.append(key)
    for key in ("steer.alphas", "transfer.alphas", "transfer.map.alphas"):
        if OmegaConf.select(cfg, key) is not None:
            out.append(key)
    return out


def refused(cfg, key: str, value) -> bool:
    """Whether setting `key` to `value` is refused, with the key named: by the composed schema or by the bounds."""
    from emis.schemas import config_problems

    planted = cfg.copy()
    try:
        OmegaConf.update(planted, key, value, merge=False)
    except Exception as err:  # a composed schema's type check
        return key in str(getattr(err, "full_key", "")) or key in str(err)
    return any(p.startswith(f"{key} ") or p.startswith(f"{key}[") for p in config_problems(planted))


@pytest.mark.parametrize("name", PRIMARIES)
def test_every_numeric_setting_refuses_wrong_types_and_out_of_range_values(name):
    """Issue 20: every numeric key of every entry point's config is checked before anything loads — a word in place
    of a number is refused, and so is at least one of a huge negative, a huge positive and a non-finite value."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(name, overrides=[f"paths.root={ROOT}"])
        if "judge" in cfg:  # the judge's numbers too
            cfg = compose(name, overrides=[f"paths.root={ROOT}", "judge=openai-compatible"])
    keys = numeric_leaves(cfg)
    assert len(keys) > (40 if name in ("build_organisms", "steer") else 10), keys
    unchecked = [k for k in keys if not refused(cfg, k, [float("nan")] if k.endswith("alphas") else "many")]
    assert unchecked == [], f"wrong types accepted: {unchecked}"
    unbounded = [k for k in keys if not any(refused(cfg, k, [v] if k.endswith("alphas") else v)
                                            for v in (-10**9, 10**9, float("nan")))]
    assert unbounded == [], f"no range: {unbounded}"
    from emis.schemas import config_problems

    assert config_problems(cfg) == []  # the defaults themselves are allowed


@pytest.mark.parametrize("entry,overrides,message", [
    ("steer", ["eval.n_prompts=0"], "eval.n_prompts must be >= 1, got 0"),
    ("steer", ["steer.alphas=[nan]"], "steer.alphas must be finite, got nan"),
    ("steer", ["steer.mode=sideways"], "steer.mode must be one of"),
    ("steer", ["capture.position=middle"], "capture.position must be one of last_prompt, response_mean"),
    ("steer", ["eval.n_prompts=abc"], "eval.n_prompts: Value 'abc' of type 'str' could not be converted to Integer"),
    ("steer", ["steer.ci_level=1.5"], "steer.ci_level must be > 0 and < 1, got 1.5"),
    ("steer", ["eval.sampling.temperature=-1"], "eval.sampling.temperature must be >= 0, got -1"),
    ("steer", ["steer.no_such_key=1"], "steer.no_such_key: Key 'no_such_key' not in 'SteerConfig'"),
    ("steer", ["model=organism-nope"], "Could not find 'model/organism-nope' (options: em-llama-3.2-1b-bad-medical, gemma-2-2b"),
    ("steer", ["steer.layer=[0,one]"], "steer.layer must be an integer or 'all', got 'one'"),
    ("steer", ["-m", "steer.layer=0,1", "steer.alphas=[1],[x]"], "steer.alphas[0]: Value 'x'"),
    ("build_organisms", ["organisms.families.llama.size.hidden_size=1.5"], "organisms.families.llama.size.hidden_size must be an integer"),
    ("build_organisms", ["+organisms.families.llama.finetune.lr=-1"], "organisms.families.llama.finetune.lr must be > 0"),
    ("build_organisms", ["organisms.train.finetune.momentum=1"], "organisms.train.finetune.momentum must be >= 0 and < 1, got 1"),
    ("build_organisms", ["organisms.train.finetune.embedding_rows=some"],
     "organisms.train.finetune.embedding_rows must be one of all, chat_template, got 'some'"),
    ("finetune", ["finetune.lr=abc"], "finetune.lr must be a number, got 'abc'"),
    ("monitor", ["monitor.fpr=2"], "monitor.fpr must be > 0 and < 1, got 2"),
    ("monitor", ["monitor.layer=first"], "monitor.layer must be an integer or 'best', got 'first'"),
    ("transfer", ["transfer.map.test_size=1"], "transfer.map.test_size must be > 0 and < 1, got 1"),
    ("transfer", ["transfer.map.fit_on=[nobody]"], "transfer.map.fit_on must be one of base, misaligned, aligned"),
    ("probe", ["probe.contrast=sideways"], "probe.contrast must be one of models, responses"),
    ("replicate", ["controls.match.tolerance=0"], "controls.match.tolerance must be > 0, got 0"),
    ("replicate", ["replicate.workers=0"], "replicate.workers must be >= 1, got 0"),
    ("steer", ["judge=openai-compatible", "judge.timeout_seconds=0"], "judge.timeout_seconds must be > 0, got 0"),
    ("steer", ["model.remote=maybe"], "model.remote must be one of False, True, local, got 'maybe'"),
    ("steer", ["judge=openai-compatible", "judge.score_method=guess"], "judge.score_method must be one of auto, logprobs, parsed"),
])
def test_the_command_line_check_names_the_key(entry, overrides, message):
    """What an entry point checks before Hydra makes a directory (the subprocess tests in test_reliability show the
    one `[ERROR]` line and exit 2 it becomes): wrong types, out-of-range values, unknown keys and options."""
    from emis.schemas import ConfigError
    from emis.stages.job import check_command_line

    with pytest.raises(ConfigError) as err:
        check_command_line(CONF, entry, overrides + [f"paths.root={ROOT}"])
    assert message in str(err.value) and "\n" not in str(err.value), str(err.value)
    check_command_line(CONF, entry, [f"paths.root={ROOT}"])  # the defaults pass
