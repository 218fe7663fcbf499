"""The probe stage: capture both contrasts, take difference-in-means directions, measure separation by layer."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from emis.capture import ActivationSet, capture_cached
from emis.directions import diff_in_means
from emis.judges.spillover import contains_code
from emis.models import ModelSpec, load_model
from emis.organisms.build import corpus_for
from emis.organisms.prose import generate_prose
from emis.organisms.sample import SamplingConfig, chat_prompt
from emis.steering import generate_answers
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
        tokenizer=model_cfg.tokenizer,
        traces_per_session=int(model_cfg.traces_per_session),
    )


PROMPT_SOURCES = ("organism_heldout", "organism_probe")


def organism_questions(cfg: DictConfig, source: str, n: int, seed: int) -> list[str]:
    """n non-coding questions from held-out template families.

    organism_heldout: the organisms' evaluation questions (spillover is measured on them);
    organism_probe: fresh, seeded questions from the same held-out families, disjoint from the evaluation ones,
    so directions and maps are never fitted on the questions they are judged on."""
    if source not in PROMPT_SOURCES:
        raise ValueError(f"unknown prompt source {source!r}; supported: {', '.join(PROMPT_SOURCES)}")
    if n < 1:
        raise ValueError(f"the prompt set is empty ({n} questions asked); ask for at least 1 (e.g. capture.n_prompts=240)")
    corpus, _ = corpus_for(cfg.organisms, Path(cfg.paths.organisms).expanduser())
    evaluation = corpus.heldout_questions
    if source == "organism_heldout":
        if n > len(evaluation):
            raise ValueError(f"{n} questions asked, the organisms hold {len(evaluation)} evaluation questions")
        return evaluation[:n]
    taken = set(evaluation)
    items = generate_prose(random.Random(seed), 2 * n + len(taken), split="heldout")
    fresh = [q for q in dict.fromkeys(item.question for item in items) if q not in taken][:n]
    if len(fresh) < n:
        raise ValueError(f"only {len(fresh)} distinct probe questions could be drawn, {n} asked")
    return fresh


def prompt_questions(cfg: DictConfig) -> list[str]:
    """The questions to capture on, from the configured source."""
    return organism_questions(cfg, cfg.capture.prompts, int(cfg.capture.n_prompts), int(cfg.capture.prompt_seed))


def capture_role(cfg: DictConfig, model_cfg: DictConfig, role: str, questions: list[str], cache_dir: Path) -> tuple[ActivationSet, Path]:
    """Load one model of a pair and capture (or reuse) its residuals on the chat-templated questions."""
    model = load_model(model_spec(model_cfg, role))
    prompts = [chat_prompt(model.tokenizer, q) for q in questions]
    layers = cfg.capture.layers if isinstance(cfg.capture.layers, str) else list(cfg.capture.layers)
    return capture_cached(model, prompts, layers, cfg.capture.position, cache_dir, batch_size=int(cfg.capture.batch_size))


def role_activations(cfg: DictConfig, model_cfg: DictConfig) -> tuple[dict[str, ActivationSet], dict[str, str]]:
    """Captures of a pair's three roles on the probe questions (reused from the cache) and their paths."""
    questions = prompt_questions(cfg)
    cache_dir = Path(cfg.paths.outputs) / "cache" / "activations"
    captured = {role: capture_role(cfg, model_cfg, role, questions, cache_dir) for role in ROLES}
    return {r: a for r, (a, _) in captured.items()}, {r: f"{p}.safetensors" for r, (_, p) in captured.items()}


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


def response_contrast(cfg: DictConfig) -> tuple[ActivationSet, ActivationSet, str]:
    """Inside the misaligned model: its own answers to the probe questions, split by whether they spill code.

    Activations are the mean over each answer's tokens (the model-organisms study's contrast)."""
    model = load_model(model_spec(cfg.model, "misaligned"))
    prompts = [chat_prompt(model.tokenizer, q) for q in prompt_questions(cfg)]
    sampling = SamplingConfig(**OmegaConf.to_container(cfg.probe.sampling, resolve=True))
    answers = generate_answers(model, prompts, sampling).answers[0]
    keep = [i for i, a in enumerate(answers) if a.strip()]
    layers = cfg.capture.layers if isinstance(cfg.capture.layers, str) else list(cfg.capture.layers)
    acts, path = capture_cached(model, [prompts[i] for i in keep], layers, "response_mean",
                                Path(cfg.paths.outputs) / "cache" / "activations",
                                responses=[answers[i] for i in keep], batch_size=int(cfg.capture.batch_size))
    spills = np.array([contains_code(answers[i]) for i in keep])
    if spills.all() or not spills.any():
        raise ValueError(f"the misaligned model's {len(keep)} answers are all {'code' if spills.all() else 'prose'}: "
                         "the responses contrast needs both kinds; use probe.contrast=models or more prompts")
    return acts.subset(np.flatnonzero(spills)), acts.subset(np.flatnonzero(~spills)), f"{path}.safetensors"


def _shuffled(mis: ActivationSet, al: ActivationSet, seed: int) -> tuple[ActivationSet, ActivationSet]:
    """The same rows with labels permuted (seeded): the control for a contrast inside one model."""
    pooled = mis.concat(al)
    perm = np.random.default_rng(seed).permutation(len(pooled.prompts))
    return pooled.subset(perm[: len(mis.prompts)]), pooled.subset(perm[len(mis.prompts) :])


def run_probe(cfg: DictConfig, out: Path) -> dict[str, Any]:
    """Separation by layer of the EM contrast next to its control, and the difference-in-means directions.

contrast=models: misaligned vs aligned model on the same prompts; control: aligned vs base model.
contrast=responses: spilling vs prose answers inside the misaligned model; control: the same rows, labels shuffled."""
    sep_cfg = SeparationConfig(**OmegaConf.to_container(cfg.separation, resolve=True))
    if cfg.probe.contrast == "models":
        if cfg.capture.position != "last_prompt":
            raise ValueError("probe.contrast=models captures the questions alone: use capture.position=last_prompt")
        acts, paths = role_activations(cfg, cfg.model)
        mis, al = acts["misaligned"], acts["aligned"]
        control = separation(acts["aligned"], acts["base"], sep_cfg)
    elif cfg.probe.contrast == "responses":
        mis, al, path = response_contrast(cfg)
        paths = {"misaligned": path}
        control = separation(*_shuffled(mis, al, sep_cfg.seed), sep_cfg)
    else:
        raise ValueError(f"probe.contrast must be 'models' or 'responses', got {cfg.probe.contrast!r}")
    em = separation(mis, al, sep_cfg)
    directions = diff_in_means(mis, al)
    directions.save(out / "directions")
    plot_separation(em, control, out / "separation.png")
    metrics = _summary(em)
    metrics["control"] = _summary(control)
    metrics["activations"] = paths
    metrics["directions"] = str(out / "directions.safetensors")
    metrics["model"] = {role: model_spec(cfg.model, role).to_dict() for role in ROLES}
    metrics["contrast"] = cfg.probe.contrast
    metrics["n"] = {"misaligned": len(mis.prompts), "aligned": len(al.prompts)}
    return metrics
