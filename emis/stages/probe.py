"""The probe stage: capture both contrasts, take difference-in-means directions, measure separation by layer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from emis.activations import ActivationSet, capture_cached
from emis.configured import NO_BASE, model_spec, pair_roles, prompt_questions, role_activations
from emis.directions import diff_in_means
from emis.generation import generate_answers
from emis.judges.spillover import contains_code
from emis.models import load_model
from emis.organisms.sample import SamplingConfig, chat_prompt
from emis.io import save_figure
from emis.separability import SeparationConfig, SeparationResult, separation


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
        control = separation(acts["aligned"], acts["base"], sep_cfg) if "base" in acts else None
    elif cfg.probe.contrast == "responses":
        mis, al, path = response_contrast(cfg)
        paths = {"misaligned": path}
        control = separation(*_shuffled(mis, al, sep_cfg.seed), sep_cfg)
    else:
        raise ValueError(f"probe.contrast must be 'models' or 'responses', got {cfg.probe.contrast!r}")
    em = separation(mis, al, sep_cfg)
    directions = diff_in_means(mis, al, cfg.probe.contrast)
    directions.save(out / "directions")
    save_figure(em.plot(control), out / "separation.png")
    metrics = _summary(em)
    metrics["control"] = _summary(control) if control else {"absent": NO_BASE}
    metrics["activations"] = paths
    metrics["directions"] = str(out / "directions")  # a folder: emis.DirectionSet.load reads it, upload_folder shares it
    metrics["model"] = {role: model_spec(cfg.model, role).to_dict() for role in pair_roles(cfg.model)}
    metrics["contrast"] = cfg.probe.contrast
    metrics["n"] = {"misaligned": len(mis.prompts), "aligned": len(al.prompts)}
    return metrics
