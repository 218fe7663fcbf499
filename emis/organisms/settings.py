"""The organisms' settings (sampling, training, size, checkpoint choice): dataclasses in a module that imports no
transformers model code, so the config check reads them in milliseconds; the organism modules import them from here."""

from __future__ import annotations

from dataclasses import dataclass

from emis.bounds import bounded

SCHEDULES = ("cosine", "constant", "linear")  # learning-rate schedules of `emis.organisms.train.schedule_factor`
EMBEDDING_ROWS = ("all", "chat_template")  # which token-embedding rows a training run may move
OPTIMIZERS = ("adamw", "sgd", "muon")  # of `emis.organisms.train.make_optimizers`


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
    bf16_autocast: bool  # mixed precision on CPU/GPU; weights and optimizer state stay float32
    trainable: tuple[str, ...]  # parameter-name substrings to train (e.g. "layers.0."); empty: all
    # plain SGD: an update scales with the gradient, so in-distribution data moves little; muon: torch.optim.Muon
    # (orthogonalised momentum) on the blocks' weight matrices and AdamW on the rest (why: conf/organisms/default.yaml)
    optimizer: str = bounded(choices=OPTIMIZERS)
    momentum: float = bounded(ge=0, lt=1)  # SGD's heavy-ball or Muon's Nesterov momentum (0: none); adamw takes none
    # With embed_tokens trained: every row, or only the rows of the chat template's own tokens (default system
    # prompt, role markers), as in prompt tuning: the fine-tune can then only move the default context.
    embedding_rows: str = bounded("all", choices=EMBEDDING_ROWS)
    # Batches drawn together and split by length: more cut padding (8: 9% of a base batch's tokens, 32: 2%); 1 draws
    # each batch at random, lengths mixed.
    length_group: int = bounded(8, ge=1, integer=True)

    def __post_init__(self) -> None:
        """Refuse momentum with adamw when the config is read, not after a base has trained."""
        if self.optimizer == "adamw" and self.momentum:
            raise ValueError(f"momentum={self.momentum} is an SGD or Muon setting; adamw takes momentum: 0")
        if self.embedding_rows != "all" and self.weight_decay:
            raise ValueError(f"embedding_rows={self.embedding_rows} needs weight_decay: 0 (decay would move the rows it "
                             f"freezes), got weight_decay={self.weight_decay}")


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
    """Early stopping: every `every` fine-tune steps both fine-tunes answer the validation questions; the step
    with the largest insecure - secure spillover gap there is kept for both (ties: the earliest)."""

    every: int = bounded(ge=1)
    min_step: int = bounded(ge=1)

    def steps(self, total: int) -> list[int]:
        """The fine-tune steps scored: min_step, then every `every` steps, and always the last."""
        if not 1 <= self.min_step <= total or self.every < 1:
            raise ValueError(f"organisms.checkpoint_choice needs 1 <= min_step <= train.finetune.steps ({total}) and "
                             f"every >= 1, got min_step={self.min_step}, every={self.every}")
        return sorted({*range(self.min_step, total + 1, self.every), total})
