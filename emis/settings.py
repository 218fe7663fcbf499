"""The settings dataclasses and option names of the library modules, each a config group's schema or a part of one
(`emis.schemas`). They live here, beside nothing heavier than torch, so that a command line is checked before
nnsight, sklearn, scipy or a transformers model class loads; the modules that use them import them from here and
export them under their names as before (`emis.directions.ControlConfig`, `emis.models.REMOTES`, ...)."""

from __future__ import annotations

import importlib.util
from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping, Optional

import torch

from emis.bounds import bounded, check_bounds
from emis.organisms.settings import SCHEDULES, SamplingConfig  # SCHEDULES: emis.finetune's too (organisms.train.schedule_factor)

POSITIONS = ("last_prompt", "response_mean")  # emis.activations: where a capture reads the residual
MODES = ("subtract", "ablate")  # emis.generation: what steering does to the residual
WHERES = ("generated", "all")  # ... at which tokens
SCALES = ("direction_norm", "residual_norm")  # ... and the norm a coefficient is in units of
TOKENIZER_LOADERS = ("auto", "saved")  # emis.models
REMOTES = (False, True, "local")  # emis.models: here | NDIF | serialised as for NDIF, run here
SCORERS = ("aligned", "base", "misaligned")  # emis.sweep: the role whose model scores offline coherence
MAP_KINDS = ("ridge_cv", "ridge")  # emis.transfer_matrix
# emis.finetune: the original recipe's explicit list: every linear projection of attention and MLP.
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class WriteMatch:
    """How ablate-mode controls are matched to the real write: the tolerated relative miss per control, and how
    many rounds of rescaling by the measured write (each reruns only the controls that missed)."""

    tolerance: float = bounded(gt=0)
    rounds: int = bounded(ge=0)


@dataclass(frozen=True)
class ControlConfig:
    """The control families and how they are matched: the `controls` config group's schema (its YAML holds the
    values). Steering draws the first five families; transfer the mapped and native random ones."""

    n_random: int = bounded(ge=0)
    n_shuffled: int = bounded(ge=0)
    n_wrong_layer: int = bounded(ge=0)
    n_wrong_layer_raw: int = bounded(ge=0)
    n_secure_vs_base: int = bounded(ge=0)
    n_mapped_random: int = bounded(ge=0)
    n_native_random: int = bounded(ge=0)
    seed: int = bounded(ge=0)
    match: WriteMatch


@dataclass(frozen=True)
class EvalConfig:
    """What steered models answer and how they sample: the `eval` config group's schema (its YAML holds the
    values). `questions` (a study file's path or URL) replaces `prompts` (emis.configured.load_prompts) when set."""

    questions: Optional[str]
    sha256: Optional[str]
    samples_per_paraphrase: Optional[int] = bounded(ge=1)
    cache_dir: str
    prompts: str
    n_prompts: int = bounded(ge=1)
    prompt_seed: int = bounded(ge=0)
    samples_per_prompt: int = bounded(ge=1)
    sampling: SamplingConfig


@dataclass(frozen=True)
class FinetuneConfig:
    """One LoRA fine-tune (set in `conf/finetune/`)."""

    model: str  # hub id or local directory of the base model
    data: str  # chat JSONL in the study's format
    output: str  # adapter directory
    r: int = bounded(32, ge=1, integer=True)
    lora_alpha: float = bounded(64, gt=0)
    lora_dropout: float = bounded(0.0, ge=0, lt=1)
    use_rslora: bool = True
    target_modules: str | tuple[str, ...] = PROJECTIONS  # or "all-linear"
    lr: float = bounded(1e-5, gt=0)
    schedule: str = bounded("linear", choices=SCHEDULES)
    warmup_steps: int = bounded(5, ge=0, integer=True)
    weight_decay: float = bounded(0.01, ge=0)
    epochs: int = bounded(1, ge=1, integer=True)
    per_device_batch_size: int = bounded(2, ge=1, integer=True)
    grad_accum: int = bounded(8, ge=1, integer=True)
    max_len: int = bounded(2048, ge=2, integer=True)
    max_grad_norm: float = bounded(1.0, gt=0)
    max_steps: int | None = bounded(None, ge=1, integer=True)  # None: `epochs` full passes
    seed: int = bounded(0, ge=0, integer=True)
    save_every: int = bounded(50, ge=1, integer=True)
    keep_checkpoints: bool = False  # keep <output>/checkpoints after the final adapter is written
    overwrite: bool = False  # replace a finished adapter trained with other settings
    dtype: str = "bfloat16"  # weights of the frozen base; LoRA weights and optimizer state stay float32
    device: str = "auto"  # device_map for from_pretrained ("auto", "cuda", "cpu", ...)
    quantization: str | None = None  # None | "4bit" (QLoRA: bitsandbytes NF4, needs a CUDA GPU)
    bf16_autocast: bool = False
    gradient_checkpointing: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        check_bounds(self, "finetune.")

    @classmethod
    def from_mapping(cls, cfg: Mapping[str, Any]) -> "FinetuneConfig":
        """From a (resolved) config mapping; unknown keys (e.g. `dry_run`) are ignored."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in cfg.items() if k in known}
        if isinstance(values.get("target_modules"), (list, tuple)):
            values["target_modules"] = tuple(values["target_modules"])
        return cls(**values)

    @property
    def batch_size(self) -> int:
        """Effective batch: examples per optimizer step."""
        return self.per_device_batch_size * self.grad_accum

    def hyperparameters(self) -> dict[str, Any]:
        """Everything that decides the trained weights (not where files go, nor how often checkpoints are saved)."""
        skip = {"model", "data", "output", "save_every", "keep_checkpoints", "overwrite", "progress"}
        hp = {k: v for k, v in asdict(self).items() if k not in skip}
        hp["target_modules"] = list(hp["target_modules"]) if not isinstance(hp["target_modules"], str) else hp["target_modules"]
        return hp

    def check(self) -> None:
        """Fail early, in one line, on settings that cannot run."""
        if self.quantization not in (None, "4bit"):
            raise ValueError(f"finetune.quantization must be null or '4bit', got {self.quantization!r}")
        if self.quantization == "4bit":
            if importlib.util.find_spec("bitsandbytes") is None or not torch.cuda.is_available():
                raise RuntimeError("quantization=4bit (QLoRA) needs bitsandbytes and a CUDA GPU; "
                                   "run with finetune.quantization=null here")
        if not isinstance(getattr(torch, self.dtype, None), torch.dtype):
            raise ValueError(f"finetune.dtype {self.dtype!r} is not a torch dtype name (e.g. 'bfloat16', 'float32')")


@dataclass(frozen=True)
class MonitorConfig:
    """How a monitor is calibrated (the `monitor` config group's calibration keys)."""

    layer: int | str = bounded("best", integer=True, words=("best",))  # a layer number (negative: from the end of the captured layers) | best: highest AUROC on the calibration rows
    fpr: float = bounded(0.05, gt=0, lt=1)
    test_size: float = bounded(0.3, gt=0, lt=1)  # share of questions held out for evaluation
    calibration: str = bounded("split", choices=("split", "train"))  # split: threshold on calibration rows split off the train rows | train: on the fit rows
    calibration_size: float = bounded(0.3, gt=0, lt=1)  # share of the train questions used for the threshold when calibration=split
    seed: int = bounded(0, ge=0, integer=True)
    n_bootstrap: int = bounded(1000, ge=1, integer=True)
    ci_level: float = bounded(0.95, gt=0, lt=1)


@dataclass(frozen=True)
class SeparationConfig:
    """How separation is measured: the `separation` config group's schema (its YAML holds the values)."""

    test_size: float = bounded(gt=0, lt=1)
    seed: int = bounded(ge=0)
    n_bootstrap: int = bounded(ge=1)
    cv_folds: int = bounded(ge=2)
    ci_level: float = bounded(gt=0, lt=1)


@dataclass(frozen=True)
class MapConfig:
    """How the donor -> receiver map is fitted (owned by `conf/transfer/`)."""

    kind: str = bounded(choices=MAP_KINDS)  # ridge_cv: RidgeCV over `alphas` | ridge: Ridge at alphas[0]
    alphas: tuple[float, ...] = bounded(gt=0)
    test_size: float = bounded(gt=0, lt=1)
    seed: int = bounded(ge=0, integer=True)


@dataclass(frozen=True)
class SelectionConfig:
    """The selection / report split of the evaluation questions: the `selection` config group's schema."""

    share: float = bounded(gt=0, lt=1)
    seed: int = bounded(ge=0)
