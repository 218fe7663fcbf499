"""The organism modules' settings as the config check sees them: field-for-field copies of
`emis.organisms.sample.SamplingConfig`, `emis.organisms.train.TrainConfig`, `emis.organisms.families.ArchSize`
and `emis.organisms.build.CheckpointChoice` (tests/test_startup.py holds each equal to its original).

Copies, not imports: those modules import transformers' model classes (seconds at start-up, and scipy), and their
code cannot change, for it keys the trained-organism cache. Only `emis.schemas` uses these; the organism code and
the stages build the originals."""

from __future__ import annotations

from dataclasses import dataclass

from emis.bounds import bounded

SCHEDULES = ("cosine", "constant", "linear")  # emis.organisms.train.SCHEDULES


@dataclass(frozen=True)
class SamplingConfig:
    """How answers are drawn (the study samples at temperature 1, top_p 1)."""

    temperature: float = bounded(ge=0)
    max_new_tokens: int = bounded(ge=1)
    batch_size: int = bounded(ge=1)
    seed: int = bounded(ge=0)


@dataclass(frozen=True)
class TrainConfig:
    """One training run's hyper-parameters (set in `conf/organisms/`)."""

    steps: int = bounded(ge=1)
    batch_size: int = bounded(ge=1)
    lr: float = bounded(gt=0)
    schedule: str = bounded(choices=SCHEDULES)
    warmup_steps: int = bounded(ge=0)
    weight_decay: float = bounded(ge=0)
    loss_on: str = bounded(choices=("all", "assistant"))
    max_len: int = bounded(ge=2)
    bf16_autocast: bool
    trainable: tuple[str, ...]
    optimizer: str = bounded(choices=("adamw", "sgd"))


@dataclass(frozen=True)
class ArchSize:
    """Size of a tiny organism; set per family in `conf/organisms/`."""

    hidden_size: int = bounded(ge=1, integer=True)
    num_layers: int = bounded(ge=1, integer=True)
    num_heads: int = bounded(ge=1, integer=True)
    num_kv_heads: int = bounded(ge=1, integer=True)
    intermediate_size: int = bounded(ge=1, integer=True)
    vocab_size: int = bounded(ge=1, integer=True)
    max_positions: int = bounded(ge=1, integer=True)


@dataclass(frozen=True)
class CheckpointChoice:
    """Early stopping: which fine-tune steps are scored for spillover (`every`, from `min_step`)."""

    every: int = bounded(ge=1)
    min_step: int = bounded(ge=1)
