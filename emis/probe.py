"""The probe stage: capture both contrasts, take difference-in-means directions, measure separation by layer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from emis.capture import ActivationSet, capture_cached
from emis.directions import diff_in_means
from emis.models import ModelSpec, load_model
from emis.organisms.build import corpus_for
from emis.organisms.sample import chat_prompt
from emis.separation import SeparationConfig, SeparationResult, plot_separation, separation

ROLES = ("misaligned", "aligned", "base")


def _expand(name: str) -> str:
    """A local path with `~` expanded; a hub id unchanged."""
    path = Path(name).expanduser()
    return str(path) if path.exists() else name


def model_spec(model_cfg: DictConfig, role: str) -> ModelSpec:
    """The ModelSpec of one role (misaligned | aligned | base) of a model-pair config."""
    entry = model_cfg[role]
    return ModelSpec(
        name=_expand(str(entry.name)),
        adapter=entry.adapter,
        remote=model_cfg.remote,
        dtype=model_cfg.dtype,
        device=model_cfg.device,
    )


def prompt_questions(cfg: DictConfig) -> list[str]:
    """The questions to capture on, from the configured source."""
    if cfg.capture.prompts != "organism_heldout":
        raise ValueError(f"unknown capture.prompts {cfg.capture.prompts!r}; supported: organism_heldout")
    corpus, _ = corpus_for(cfg.organisms, Path(cfg.paths.organisms).expanduser())
    return corpus.heldout_questions[: int(cfg.capture.n_prompts)]


def capture_role(cfg: DictConfig, role: str, questions: list[str], cache_dir: Path) -> tuple[ActivationSet, Path]:
    """Load one model of the pair and capture (or reuse) its residuals on the chat-templated questions."""
    model = load_model(model_spec(cfg.model, role))
    prompts = [chat_prompt(model.tokenizer, q) for q in questions]
    layers = cfg.capture.layers if isinstance(cfg.capture.layers, str) else list(cfg.capture.layers)
    return capture_cached(model, prompts, layers, cfg.capture.position, cache_dir, batch_size=int(cfg.capture.batch_size))


def _summary(result: SeparationResult) -> dict[str, Any]:
    """Per-layer lists plus the final layer's numbers with intervals."""
    last = -1
    return {
        "layers": result.layers,
        "heldout_accuracy": result.accuracy,
        "auroc": result.auroc,
        "probe_accuracy": result.probe_accuracy,
        "final_layer": {
            "layer": result.layers[last],
            "heldout_accuracy": result.accuracy[last],
            "heldout_accuracy_ci95": list(result.accuracy_ci[last]),
            "auroc": result.auroc[last],
            "auroc_ci95": list(result.auroc_ci[last]),
            "probe_accuracy": result.probe_accuracy[last],
            "probe_accuracy_ci95": list(result.probe_accuracy_ci[last]),
        },
    }


def run_probe(cfg: DictConfig, out: Path) -> dict[str, Any]:
    """EM contrast (misaligned vs aligned) and control contrast (aligned vs base) on the same prompts."""
    if cfg.capture.position != "last_prompt":
        raise ValueError("probe on the organisms uses capture.position=last_prompt (response_mean needs answers)")
    questions = prompt_questions(cfg)
    cache_dir = Path(cfg.paths.outputs) / "cache" / "activations"
    captured = {role: capture_role(cfg, role, questions, cache_dir) for role in ROLES}
    acts = {role: a for role, (a, _) in captured.items()}
    sep_cfg = SeparationConfig(**OmegaConf.to_container(cfg.separation, resolve=True))
    em = separation(acts["misaligned"], acts["aligned"], sep_cfg)
    control = separation(acts["aligned"], acts["base"], sep_cfg)
    directions = diff_in_means(acts["misaligned"], acts["aligned"])
    directions.save(out / "directions")
    plot_separation(em, control, out / "separation.png")
    metrics = _summary(em)
    metrics["control"] = _summary(control)
    metrics["activations"] = {role: f"{path}.safetensors" for role, (_, path) in captured.items()}
    metrics["directions"] = str(out / "directions.safetensors")
    metrics["model"] = {role: model_spec(cfg.model, role).to_dict() for role in ROLES}
    return metrics
