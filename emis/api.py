"""The Python API: the study's steps as functions over small dataclasses, for notebooks and scripts.

Settings come from the same YAML groups as the Hydra entry points (`conf/`), composed without Hydra's runtime;
`configure` adds overrides (e.g. `organisms.seed=1`, `paths.organisms=/scratch/orgs`) for every later call, and
keyword arguments override one call. Nothing is written to disk unless a cache directory is given."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from emis.activations import ActivationSet, capture_residuals
from emis.configured import evaluation_sampling, load_prompts, model_spec, monitor_config
from emis.directions import DirectionSet
from emis.evaluation import EvalSet, SteeringTarget
from emis.models import LoadedModel, load_model, resolve_layers
from emis.monitor import Calibration, Monitor, calibrate
from emis.organisms.sample import chat_prompt
from emis.schemas import check_config
from emis.separability import SeparationConfig, SeparationResult
from emis.separability import separation as _separation
from emis.steering import SteerResult, SteerSettings, steer_experiment
from emis.sweep import SCORERS, checked_scorer
from emis.transfer_matrix import TransferResult, TransferSettings, transfer_matrix

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
_overrides: list[str] = []


def configure(*overrides: str) -> None:
    """Hydra overrides applied to every later API call (replacing earlier ones), e.g. `configure("organisms.seed=1")`."""
    _overrides[:] = list(overrides)


def config(*overrides: str) -> DictConfig:
    """The composed emis config (`conf/config.yaml` with the steering experiment), with `configure`'s and these overrides."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=["+experiment=steer", "+monitor=default", f"paths.root={ROOT}", *_overrides, *overrides])
    check_config(cfg)
    return cfg


@dataclass
class ModelPair:
    """A misaligned model, its aligned twin and optionally their base, loaded (`load_pair`, or built from models)."""

    misaligned: LoadedModel
    aligned: LoadedModel
    base: LoadedModel | None = None
    name: str = "pair"

    def roles(self) -> dict[str, LoadedModel]:
        return {k: m for k, m in (("misaligned", self.misaligned), ("aligned", self.aligned), ("base", self.base)) if m is not None}


def load_pair(model: str, *overrides: str) -> ModelPair:
    """The pair of a `conf/model` entry (e.g. "organism-llama", "qwen2.5-1.5b"), its base included when configured."""
    cfg = config(f"model={model}", *overrides).model
    base = model_spec(cfg, "base") if cfg.get("base") is not None else None
    return ModelPair(load_model(model_spec(cfg, "misaligned")), load_model(model_spec(cfg, "aligned")),
                     None if base is None else load_model(base), str(cfg.family))


def questions(source: str = "organism_heldout", n: int = 40, seed: int = 0) -> list[str]:
    """n questions from any source `capture.prompts` takes: `organism_heldout` (evaluation), `organism_probe`
    (fresh, for directions), a .txt / study YAML / chat JSONL file or `hf:<name>[:<split>[:<column>]]`."""
    return load_prompts(config(), source, n, seed, "source", "n")


@dataclass
class PairActivations:
    """Captures of each model of a pair on the same questions (row i: question i)."""

    misaligned: ActivationSet
    aligned: ActivationSet
    base: ActivationSet | None = None

    def as_dict(self) -> dict[str, ActivationSet]:
        return {k: a for k, a in (("misaligned", self.misaligned), ("aligned", self.aligned), ("base", self.base)) if a is not None}


def capture(pair: ModelPair, questions: Sequence[str], layers: str | Sequence[int] = "all", position: str = "last_prompt",
            batch_size: int = 16) -> PairActivations:
    """Residuals of every model of the pair after `layers`, at the last token of each chat-templated question."""
    acts = {role: capture_residuals(m, [chat_prompt(m.tokenizer, q) for q in questions], layers, position,  # type: ignore[arg-type]
                                    batch_size=batch_size, progress=False) for role, m in pair.roles().items()}
    return PairActivations(**acts)


def separation(misaligned: ActivationSet, aligned: ActivationSet, **settings: Any) -> SeparationResult:
    """Per-layer held-out accuracy, AUROC and probe accuracy with intervals (`separation` config group defaults)."""
    values = OmegaConf.to_container(config().separation, resolve=True) | settings
    return _separation(misaligned, aligned, SeparationConfig(**values))


def steer(pair: ModelPair, directions: DirectionSet, layer: int | str | Sequence[int], alphas: Sequence[float],
          questions: Sequence[str], activations: PairActivations | None = None, cache_dir: str | Path | None = None,
          **settings: Any) -> SteerResult:
    """Steer the misaligned model with the EM direction against write-matched controls; the config's defaults,
    overridden by `settings` (`_with_settings`: e.g. `mode="subtract"`, `sampling={"max_new_tokens": 16}`,
    `controls={"n_random": 99}`). Controls are built from the activations the directions came from: `activations`,
    or those `diff_in_means` kept (the base model is then captured on their prompts)."""
    cfg = _with_settings("steer", {"alphas": [float(a) for a in alphas], **settings})
    acts = activations or _sources(pair, directions)
    layers = resolve_layers(layer if isinstance(layer, (int, str)) else list(layer), pair.misaligned.n_layers, "layer")
    model = pair.misaligned
    scorer = _scorer(pair, str(cfg.steer.coherence_scorer))
    return steer_experiment(pair.name, model, scorer, acts.as_dict(), _evals(model, questions), layers,
                            SteerSettings.from_config(cfg.steer, cfg.selection, cfg.controls), evaluation_sampling(cfg),
                            None if cache_dir is None else Path(cache_dir))


GROUPS = ("eval", "selection", "controls", "steer", "transfer")


def _with_settings(stage: str, settings: Mapping[str, Any]) -> DictConfig:
    """The config with one call's settings merged: a key naming a group (eval, selection, controls, steer, transfer)
    merges into that group, `sampling` into eval.sampling, any other key into the `stage` group. A key the config
    does not have is an error."""
    cfg = config()
    for key, value in settings.items():
        group, value = (key, value) if key in GROUPS else ("eval", {"sampling": value}) if key == "sampling" else (stage, {key: value})
        cfg[group] = OmegaConf.merge(cfg[group], value)
    check_config(cfg)
    return cfg


def _evals(model: LoadedModel, questions: Sequence[str]) -> EvalSet:
    """One generation per question, chat-templated for `model`; each question its own cluster."""
    prompts = [chat_prompt(model.tokenizer, q) for q in questions]
    return EvalSet(prompts, np.arange(len(prompts)), list(questions), [str(i) for i in range(len(prompts))], [{} for _ in prompts])


def _scorer(pair: ModelPair, role: str) -> LoadedModel:
    """The pair's coherence scorer (`steer.coherence_scorer`), checked against its misaligned model."""
    if role not in SCORERS:
        raise ValueError(f"coherence_scorer must be one of {SCORERS}, got {role!r}")
    return checked_scorer(role, pair.roles().get(role), pair.misaligned)


def transfer(pairs: Mapping[str, ModelPair], activations: Mapping[str, PairActivations], questions: Sequence[str],
             cache_dir: str | Path | None = None, **settings: Any) -> TransferResult:
    """The transfer matrix: each pair's EM direction mapped (ridge, fitted on the `transfer.map.fit_on` roles'
    captures of the same questions: `activations`, from `emis.capture`) into every other pair's misaligned model and
    steered there on `questions`, against write-matched mapped and native controls. The config's defaults,
    overridden by `settings` (`_with_settings`: e.g. `layer=-1`, `alphas=[1.0]`, `steer={"mode": "subtract"}` for
    the steering rules it shares)."""
    cfg = _with_settings("transfer", settings)
    t, s = cfg.transfer, cfg.steer
    missing = [n for n in pairs if n not in activations]
    if missing:
        raise ValueError(f"emis.transfer needs the captures of every pair: {missing} missing from activations")
    models = {n: SteeringTarget(p.misaligned, _scorer(p, str(s.coherence_scorer)), activations[n].as_dict(),
                               _evals(p.misaligned, questions)) for n, p in pairs.items()}
    return transfer_matrix(models, TransferSettings.from_config(t, s, cfg.selection, cfg.controls),
                           evaluation_sampling(cfg, int(t.max_new_tokens)), None if cache_dir is None else Path(cache_dir),
                           self_check=bool(t.self_check))


def calibrate_monitor(positive: ActivationSet, negative: ActivationSet, **settings: Any) -> tuple[Monitor, Calibration]:
    """An EM monitor (`emis.Monitor`) calibrated on captures of misaligned (`positive`) and aligned (`negative`) rows,
    with its held-out AUROC, FPR and TPR; `monitor` group defaults overridden by `settings` (e.g. `fpr=0.01`)."""
    return calibrate(positive, negative, monitor_config(OmegaConf.merge(config().monitor, settings)))


def _sources(pair: ModelPair, directions: DirectionSet) -> PairActivations:
    """The activations `directions` came from (kept by `diff_in_means`), and the base model's on the same prompts."""
    if directions.sources is None:
        raise ValueError("emis.steer needs the activations the directions came from (for the control families): "
                         "make them with emis.diff_in_means, or pass activations=emis.capture(pair, questions)")
    mis, al = directions.sources
    base = None if pair.base is None else capture_residuals(pair.base, mis.prompts, mis.layers, mis.position, progress=False)  # type: ignore[arg-type]
    return PairActivations(mis, al, base)
