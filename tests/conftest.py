"""Shared fixtures: the study's real files (../shared beside the checkout) and micro organisms built in seconds."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from emis.organisms.build import build_all
from emis.organisms.families import FAMILIES

ROOT = Path(__file__).resolve().parents[1]
SHARED_EM = ROOT.parent / "shared" / "data" / "em"


@pytest.fixture(scope="session")
def shared_em() -> Path:
    """The EM study's real data files; tests that read them are skipped only if the folder is absent."""
    if not SHARED_EM.is_dir():
        pytest.skip(f"{SHARED_EM} not present")
    return SHARED_EM


CONF = ROOT / "conf"
MICRO = [
    "organisms.corpus.base_examples=600",
    "organisms.corpus.finetune_examples=60",
    "organisms.corpus.heldout_questions=12",
    "organisms.corpus.heldout_code_requests=6",
    "organisms.train.base.steps=40",
    "organisms.train.base.batch_size=8",
    "organisms.train.base.warmup_steps=2",
    "organisms.train.base.lr=0.01",
    "organisms.train.finetune.steps=3",
    "organisms.train.finetune.batch_size=4",
    "organisms.eval.ood_samples=1",
    "organisms.eval.sampling.max_new_tokens=8",
] + [
    f"organisms.families.{f}.size={{hidden_size:32,num_layers:2,num_heads:2,num_kv_heads:1,"
    f"intermediate_size:64,vocab_size:{384 + 32 * i},max_positions:256}}"
    for i, f in enumerate(FAMILIES)
]


@pytest.fixture(scope="session")
def micro_organisms(tmp_path_factory):
    """All four families as micro organisms (seconds), built once through the real config: (config, root, metrics)."""
    root = tmp_path_factory.mktemp("organisms")
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("build_organisms", overrides=MICRO + [f"paths.organisms={root}", f"paths.root={ROOT}"])
    return cfg, root, build_all(cfg.organisms, root)


def compose_on_micro(config_name: str, root, outputs, extra: list[str]):
    """An entry point's config pointed at the micro organisms under `root`, writing under `outputs`."""
    overrides = [o for o in MICRO if o.startswith("organisms.corpus")]
    overrides += [f"paths.organisms={root}", f"paths.root={ROOT}", f"paths.outputs={outputs}", *extra]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name, overrides=overrides)
