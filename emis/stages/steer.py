"""The steering stage: the configured pair's captures and evaluation set through `steer_experiment`;
steering.png, generations.jsonl and the metrics."""

from __future__ import annotations

import json
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from emis.configured import evaluation_sampling, generation_cache, steering_target
from emis.evaluation import EvalSet
from emis.io import atomic_file, save_figure
from emis.judges.llm import judge_from_config
from emis.judges.spillover import contains_code
from emis.models import resolve_layers
from emis.stats import QuestionSplit
from emis.steering import SteerSettings, steer_experiment
from emis.sweep import SweepOutcome


def run_steer(cfg: DictConfig, out: Path) -> dict[str, Any]:
    """The steering stage: the configured pair's captures, sweep, controls and verdict; steering.png,
    generations.jsonl and the metrics."""
    s = cfg.steer
    judge = judge_from_config(cfg.judge)
    with judge or nullcontext():
        target, paths = steering_target(cfg, cfg.model, "eval.n_prompts")
        evals = target.evals
        layers = resolve_layers(OmegaConf.to_object(s.layer) if OmegaConf.is_config(s.layer) else s.layer, target.model.n_layers, "steer.layer")
        result = steer_experiment(str(cfg.model.family), target.model, target.scorer, target.acts, evals, layers,
                                  SteerSettings.from_config(s, cfg.selection, cfg.controls), evaluation_sampling(cfg), generation_cache(cfg), judge)
    save_figure(result.plot(), out / "steering.png")
    write_generations(out / "generations.jsonl", result.metrics["best"]["layer"], result.metrics["alphas"], evals,
                      result.sweep, result.split)
    metrics = dict(result.metrics)
    judged = metrics.pop("judge", None)
    metrics |= {"questions": str(cfg.eval.questions) if cfg.eval.questions is not None else cfg.eval.prompts, "activations": paths}
    return metrics | ({"judge": judged} if judged is not None else {})


def write_generations(path: Path, layer: int, alphas: list[float], evals: EvalSet, sweep: SweepOutcome,
                      split: QuestionSplit) -> None:
    """The chosen layer's answers at every α, one JSON row each, with its split, spill flag and judge scores when judged."""
    report = set(split.report.tolist())
    with atomic_file(path, "w") as f:
        for k, (alpha, answers) in enumerate(zip(alphas, sweep.answers)):
            for row, (prompt, answer) in enumerate(zip(evals.prompts, answers)):
                unit = int(evals.units[row])
                record = {"layer": layer, "alpha": alpha, "question_id": evals.ids[unit],
                          "split": "report" if unit in report else "select", "prompt": prompt,
                          "answer": answer, "spill": contains_code(answer)}
                f.write(json.dumps(record | (sweep.judged[k][row] if sweep.judged else {})) + "\n")
