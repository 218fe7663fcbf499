"""The config groups' schemas and their check. Each group's dataclass gives its keys' types and allowed values
(`emis.bounds.bounded`); the YAML files hold the values, so each setting has one home. Groups whose YAML extends
its schema (`defaults: [schema, _self_]`, registered here as `<group>/schema`) are type-checked when the config is
composed; `config_problems` checks every group's bounds on the composed config before anything loads.
It imports light modules only (`emis.settings`, `emis.organisms.settings`, ...), so an entry point checks its
command line before nnsight, sklearn or a transformers model class loads (tests/test_startup.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from emis.bounds import bound_problems, bounded
from emis.judges.llm import JudgeConfig
from emis.organisms.corpus import CorpusConfig
from emis.organisms.settings import ArchSize, CheckpointChoice, SamplingConfig, TrainConfig
from emis.settings import (MODES, POSITIONS, REMOTES, SCALES, SCORERS, TOKENIZER_LOADERS, WHERES, ControlConfig, EvalConfig,
                           FinetuneConfig, MapConfig, MonitorConfig, SelectionConfig, SeparationConfig)

LAYERS = dict(integer=True, words=("all",))  # a layer spec: all | an index | a list of them (negative: from the end)


@dataclass(frozen=True)
class SteerConfig:
    """The `steer` group: within-model steering."""

    layer: Any = bounded(**LAYERS)
    alphas: list[float] = bounded()
    mode: str = bounded(choices=MODES)
    where: str = bounded(choices=WHERES)
    scale: str = bounded(choices=SCALES)
    coherence_tolerance: float = bounded(ge=0)
    coherence_scorer: str = bounded(choices=SCORERS)
    n_bootstrap: int = bounded(ge=1)
    ci_level: float = bounded(gt=0, lt=1)
    bootstrap_seed: int = bounded(ge=0)


@dataclass(frozen=True)
class TransferConfig:
    """The `transfer` group: cross-model maps of the EM direction."""

    models: list[str]
    layer: int = bounded(integer=True)
    alphas: list[float] = bounded()
    n_prompts: int = bounded(ge=1)
    max_new_tokens: int = bounded(ge=1)
    self_check: bool
    rescale: str = bounded(choices=("native_norm", "mapped"))
    map: TransferMapConfig


@dataclass(frozen=True)
class TransferMapConfig(MapConfig):
    """`transfer.map`: the map's fit (MapConfig) and whose captures pair the two spaces."""

    fit_on: list[str] = bounded(choices=("base", "misaligned", "aligned"))


@dataclass(frozen=True)
class CaptureConfig:
    """The `capture` group: which residuals are read, on which questions."""

    layers: Any = bounded(**LAYERS)
    position: str = bounded(choices=POSITIONS)
    batch_size: int = bounded(ge=1)
    prompts: str
    n_prompts: int = bounded(ge=1)
    prompt_seed: int = bounded(ge=0)


@dataclass(frozen=True)
class ProbeConfig:
    """The `probe` group: which contrast gives the direction."""

    contrast: str = bounded(choices=("models", "responses"))
    sampling: SamplingConfig


@dataclass(frozen=True)
class MonitorSpillConfig:
    """`monitor.spill`: the spillover rate measured at each curve point."""

    n_questions: int = bounded(ge=1)
    sampling: SamplingConfig


@dataclass(frozen=True, kw_only=True)
class MonitorStageConfig(MonitorConfig):
    """The `monitor` group: calibration (MonitorConfig) and the fine-tuning curve."""

    every: int = bounded(ge=1)
    min_points: int = bounded(ge=2)
    n_probe: int = bounded(ge=1)
    batch_size: int = bounded(ge=1)
    spill: MonitorSpillConfig
    control_finetune: bool


@dataclass(frozen=True)
class TrainPair:
    """`organisms.train`: the base run and the fine-tunes."""

    base: TrainConfig
    finetune: TrainConfig


@dataclass(frozen=True)
class FamilySpec:
    """`organisms.families.<family>`: its size and its overrides of `organisms.train`."""

    size: ArchSize
    base: TrainConfig  # only the keys given are checked
    finetune: TrainConfig


@dataclass(frozen=True)
class OrganismEval:
    """`organisms.eval`: how the organisms' card numbers are measured."""

    ood_question_files: list[str]
    ood_plain_yaml: Optional[str]
    ood_samples: int = bounded(ge=1)
    sampling: SamplingConfig


@dataclass(frozen=True)
class OrganismsConfig:
    """The `organisms` group."""

    build: list[str]
    seed: int = bounded(ge=0, integer=True)
    base_seed: int = bounded(ge=0, integer=True)
    finetune_seed: int = bounded(ge=0, integer=True)
    workers: int = bounded(ge=1, integer=True)
    corpus: CorpusConfig
    train: TrainPair
    families: dict[str, FamilySpec]
    checkpoint_choice: CheckpointChoice
    eval: OrganismEval


@dataclass(frozen=True)
class ReplicateConfig:
    """`replicate` (experiment/replicate.yaml): the study end to end."""

    build_organisms: bool
    workers: int = bounded(ge=1, integer=True)


@dataclass(frozen=True)
class ModelRoleConfig:
    """One role of a model pair: the checkpoint, an optional adapter, their revisions, and any shared setting of the
    pair it overrides (unset: the pair's)."""

    name: str
    adapter: Optional[str] = None
    revision: Optional[str] = None
    adapter_revision: Optional[str] = None
    remote: Any = bounded(None, choices=REMOTES)
    dtype: Optional[str] = None
    device: Optional[str] = None
    tokenizer: Optional[str] = bounded(None, choices=TOKENIZER_LOADERS)
    traces_per_session: Optional[int] = bounded(None, ge=1, integer=True)


@dataclass(frozen=True)
class ModelPairConfig:
    """A `model` entry (or one of `models`): the settings its roles share, and the roles (base may be null)."""

    family: str
    remote: Any = bounded(choices=REMOTES)
    traces_per_session: int = bounded(ge=1, integer=True)
    dtype: str
    tokenizer: str = bounded(choices=TOKENIZER_LOADERS)
    device: str
    misaligned: ModelRoleConfig
    aligned: ModelRoleConfig
    base: Optional[ModelRoleConfig]


@dataclass(frozen=True)
class JudgeGroupConfig(JudgeConfig):
    """The `judge` group: JudgeConfig and the judge's kind."""

    kind: str = bounded("none", choices=("none", "openai-compatible"))


# Registered for composition (the group's YAML lists `schema` in its defaults) ...
SCHEMAS = {"separation": SeparationConfig, "selection": SelectionConfig, "controls": ControlConfig, "eval": EvalConfig,
           "steer": SteerConfig, "transfer": TransferConfig, "capture": CaptureConfig, "probe": ProbeConfig}
# ... and bound-checked with the others, whose dataclasses hold code defaults or unions composition cannot type.
CHECKED = {**SCHEMAS, "monitor": MonitorStageConfig, "finetune": FinetuneConfig, "judge": JudgeGroupConfig,
           "organisms": OrganismsConfig, "model": ModelPairConfig, "replicate": ReplicateConfig}


def register_schemas() -> None:
    """Store every schema in Hydra's ConfigStore (idempotent); `import emis` does it before any config is composed."""
    store = ConfigStore.instance()
    for group, schema in SCHEMAS.items():
        store.store(group=group, name="schema", node=_writable(OmegaConf.structured(schema)))


def config_problems(cfg: DictConfig) -> list[str]:
    """`<key> <what is wrong>` for every value of the composed config outside its key's bounds."""
    problems: list[str] = []
    for group, schema in CHECKED.items():
        if isinstance(cfg.get(group), DictConfig):
            problems += bound_problems(OmegaConf.to_container(cfg[group], resolve=True), schema, f"{group}.")
    for name, pair in (cfg.get("models") or {}).items():  # replicate and transfer: several pairs
        problems += bound_problems(OmegaConf.to_container(pair, resolve=True), ModelPairConfig, f"models.{name}.")
    return problems


class ConfigError(ValueError):
    """A composed config with a value its key does not allow, or a command line Hydra cannot compose."""


def check_config(cfg: DictConfig) -> None:
    """Raise ConfigError naming every key whose value is outside its schema's bounds."""
    problems = config_problems(cfg)
    if problems:
        raise ConfigError(f"{'; '.join(problems)} — fix the override (each key is documented in conf/<group>/)")


def _writable(node: DictConfig) -> DictConfig:
    """The node with the read-only flag a frozen dataclass sets cleared at every level, so the YAML can fill it in
    (the dataclass the config turns into, `OmegaConf.to_object`, stays frozen)."""
    OmegaConf.set_readonly(node, None)
    for key in node:
        child = node._get_node(key)
        if isinstance(child, DictConfig):
            _writable(child)
    return node
