"""The config groups' schemas: each group's dataclass registered as a Hydra structured config (`<group>/schema`),
which its YAML extends, so a value of the wrong type or a key the group does not have is refused when the config
is composed. The schemas hold the types, the YAML files the values: each setting has one home."""

from __future__ import annotations

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from emis.directions import ControlConfig
from emis.evaluation import EvalConfig
from emis.separability import SeparationConfig
from emis.stats import SelectionConfig

SCHEMAS = {"separation": SeparationConfig, "selection": SelectionConfig, "controls": ControlConfig, "eval": EvalConfig}


def register_schemas() -> None:
    """Store every schema in Hydra's ConfigStore (idempotent); `import emis` does it before any config is composed."""
    store = ConfigStore.instance()
    for group, schema in SCHEMAS.items():
        store.store(group=group, name="schema", node=_writable(OmegaConf.structured(schema)))


def _writable(node: DictConfig) -> DictConfig:
    """The node with the read-only flag a frozen dataclass sets cleared at every level, so the YAML can fill it in
    (the dataclass the config turns into, `OmegaConf.to_object`, stays frozen)."""
    OmegaConf.set_readonly(node, None)
    for key in node:
        child = node._get_node(key)
        if isinstance(child, DictConfig):
            _writable(child)
    return node
