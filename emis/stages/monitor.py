"""The monitor stage: calibrate an EM monitor on one organism pair, then watch it during the insecure fine-tune.

1. Captures of the misaligned / aligned / base organisms on the probe questions (`emis.configured.role_activations`,
   reused from the activation cache) -> `calibrate` insecure vs secure, and the control secure vs base at the
   same layer; the EM monitor's flag rate on the base model's held-out rows too.
2. The insecure fine-tune is re-run from the base with the organisms' own corpus, finetune config and seed,
   with `MonitorCallback` every `monitor.every` steps: mean monitor score on a fixed probe set (held-out
   calibration questions) and the code-spillover rate on the organisms' evaluation questions. The secure
   fine-tune, run the same way (`monitor.control_finetune`), is the curve's control: a monitor that tracks
   fine-tuning on code in general rises there too.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

from emis.configured import ROLES, load_prompts, model_spec, monitor_config, pair_roles, role_activations
from emis.io import atomic_write_json
from emis.models import load_tokenizer
from emis.monitor import (
    LogFn,
    MonitorCallback,
    calibrate,
    pearson_with_interval,
    rate_interval,
    plot_curve,
    plot_roc,
)
from emis.organisms.build import corpus_for, family_config, finetune_steps
from emis.organisms.sample import SamplingConfig
from emis.organisms.train import encode, train

log = logging.getLogger(__name__)


def curve_points(steps: int, every: int) -> list[int]:
    """The steps a run of `steps` steps is measured at: 0, every multiple of `every`, and the last."""
    return [0] + [s for s in range(1, steps + 1) if s % every == 0 or s == steps]


def jsonl_sink(path: Path) -> LogFn:
    """A `log_fn` that appends `{"step": ..., **metrics}` lines to `path` (W&B can replace it)."""
    def log_fn(metrics: dict[str, float], step: int) -> None:
        with path.open("a", encoding="utf-8") as f:
            f.write(json.dumps({"step": step, **metrics}) + "\n")
    return log_fn


def run_monitor(cfg: DictConfig, out: Path, log_fn: LogFn | None = None) -> dict[str, Any]:
    """Calibrate, fine-tune with the callback, write monitor/ROC/curve artefacts under `out`; return the metrics."""
    if cfg.capture.position != "last_prompt":
        raise ValueError("the monitor stage captures the questions alone: use capture.position=last_prompt")
    mcfg = monitor_config(cfg.monitor)
    family = str(cfg.model.family)
    fam = family_config(cfg.organisms, family)
    # Re-run the organism's fine-tune exactly as long as its build kept it (the validation-chosen step).
    steps = finetune_steps(Path(model_spec(cfg.model, "misaligned").name).expanduser())
    fam = replace(fam, finetune=replace(fam.finetune, steps=steps))
    every = int(cfg.monitor.every)
    if len(curve_points(fam.finetune.steps, every)) < int(cfg.monitor.min_points):
        raise ValueError(f"monitor.every={every} gives {len(curve_points(fam.finetune.steps, every))} points over "
                         f"{fam.finetune.steps} steps; lower it to get >= {cfg.monitor.min_points}")
    out.mkdir(parents=True, exist_ok=True)

    # 1. Calibration on the organisms' captures.
    if "base" not in pair_roles(cfg.model):
        raise ValueError("the monitor watches a fine-tune of the base model and calibrates its control on it: "
                         "it needs model.base (this model config has base: null)")
    acts, paths = role_activations(cfg, cfg.model)
    specs = {role: model_spec(cfg.model, role).to_dict() for role in ROLES}
    monitor, em = calibrate(acts["misaligned"], acts["aligned"], mcfg,
                            provenance={"calibrated_on": {"positive": specs["misaligned"], "negative": specs["aligned"]},
                                        "family": str(cfg.model.family)})
    _, control = calibrate(acts["aligned"], acts["base"], replace(mcfg, layer=monitor.layer))
    monitor.save(out / "monitor")
    atomic_write_json(out / "calibration.json", {"em": em.to_dict(), "control": control.to_dict()})
    plot_roc({"EM (insecure vs secure)": em, "control (secure vs base)": control}, out / "roc.png",
             title=f"{cfg.model.family}: monitor at layer {monitor.layer}, held-out ROC")
    test_rows = em.split.neg["test"]  # paired split: the same questions for every role
    base_flags = monitor.flag(monitor.project(acts["base"].subset(test_rows)))
    base_ci = rate_interval(base_flags, mcfg.n_bootstrap, mcfg.seed + 3, mcfg.ci_level)

    # 2. The insecure fine-tune from the base, measured along the way (and the secure one as its control).
    root = Path(cfg.paths.organisms).expanduser()
    corpus, _ = corpus_for(cfg.organisms, root)
    base_spec = model_spec(cfg.model, "base")
    base_dir = base_spec.name
    tok = load_tokenizer(base_spec)  # what the calibration's captures were tokenized with (load_model's tokenizer)
    probe_rows = em.split.pos["test"][: int(cfg.monitor.n_probe)]
    probe_prompts = [acts["misaligned"].prompts[i] for i in probe_rows]
    spill_questions = load_prompts(cfg, "organism_heldout", int(cfg.monitor.spill.n_questions), int(cfg.eval.prompt_seed),
                                   "monitor.spill", "monitor.spill.n_questions")
    sampling = SamplingConfig(**OmegaConf.to_container(cfg.monitor.spill.sampling, resolve=True))
    # The build encoded its training data with the tokenizer it had just trained, i.e. tokenizer.json as saved:
    # encode with it so the run repeats the organism's fine-tune. Score and sample with the tokenizer the captures
    # the monitor was calibrated on were made with (model.tokenizer: saved or auto), and count the examples it
    # would encode differently (with model.tokenizer=auto, AutoTokenizer may load another class, e.g. Qwen2Tokenizer).
    train_tok = PreTrainedTokenizerFast.from_pretrained(base_dir)
    runs: dict[str, dict[str, Any]] = {}
    variants = ["insecure"] + (["secure"] if cfg.monitor.control_finetune else [])
    for variant in variants:
        encoded = [encode(train_tok, ex, fam.finetune.max_len, fam.finetune.loss_on) for ex in getattr(corpus, variant)]
        mismatched = sum(a != encode(tok, ex, fam.finetune.max_len, fam.finetune.loss_on)
                         for a, ex in zip(encoded, getattr(corpus, variant)))
        if mismatched:
            log.warning("%s: the scoring tokenizer (model.tokenizer=%s, %s) encodes %d of %d %s fine-tune examples "
                        "differently from the saved tokenizer.json the organism was trained with; training uses the "
                        "latter", family, base_spec.tokenizer, type(tok).__name__, mismatched, len(encoded), variant)
        sink = log_fn if variant == "insecure" or log_fn is None else (
            lambda d, step, _f=log_fn, _v=variant: _f({f"{_v}/{k}": v for k, v in d.items()}, step))
        callback = MonitorCallback(monitor, tok, probe_prompts, spill_questions, sampling, every,
                                   last_step=fam.finetune.steps, log_fn=sink, batch_size=int(cfg.monitor.batch_size))
        model = AutoModelForCausalLM.from_pretrained(base_dir).eval()
        torch.manual_seed(fam.finetune_seed)
        callback.measure(0, model)
        losses = train(model, encoded, fam.finetune, train_tok.pad_token_id, fam.finetune_seed,
                       desc=f"{family}/{variant}+monitor", on_step=callback)
        curve = callback.curve()
        runs[variant] = {
            "curve": {"steps": curve["step"], "mean_score": curve["mean_score"], "flag_rate": curve["flag_rate"],
                      "spillover": curve["spillover"]},
            "correlation": {"of": "mean_score vs spillover over the curve points",
                            **pearson_with_interval(curve["mean_score"], curve["spillover"], mcfg.ci_level, seed=mcfg.seed)},
            "losses": losses,
            "tokenizer_mismatches": mismatched,
        }
        del model
    correlation = runs["insecure"]["correlation"]
    plot_curve(runs["insecure"]["curve"], monitor.threshold, out / "curve.png",
               title=f"{family}: monitor score and spillover during the insecure fine-tune"
                     + (f"\nPearson r = {correlation['r']:.2f}, Fisher-z 95% CI [{correlation['fisher_ci95'][0]:.2f}, "
                        f"{correlation['fisher_ci95'][1]:.2f}], {correlation['n_points']} points"
                        if correlation["r"] is not None else ""),
               control=runs.get("secure", {}).get("curve"))

    # The run re-trains the organism: its end points should match the saved base and insecure organisms.
    organism_scores = {role: float(monitor.project(acts[role].subset(probe_rows)).mean()) for role in ROLES}
    metrics = {
        "family": family,
        "monitor": {**em.summary(), "position": monitor.position, "path": str(out / "monitor.safetensors")},
        "control": control.summary(),
        "monitor_on_base_heldout": {"flag_rate": float(base_flags.mean()), "flag_rate_ci95": list(base_ci),
                                    "n": int(len(base_flags))},
        "roc": {"em": {"fpr": em.roc_fpr, "tpr": em.roc_tpr}, "control": {"fpr": control.roc_fpr, "tpr": control.roc_tpr}},
        "curve": runs["insecure"]["curve"],
        "correlation": correlation,
        "control_finetune": {k: runs["secure"][k] for k in ("curve", "correlation")} if "secure" in runs else None,
        "finetune": {"steps": fam.finetune.steps, "every": every, "losses": {v: r["losses"] for v, r in runs.items()},
                     "config": asdict(fam.finetune), "n_probe": len(probe_prompts), "n_spill": len(spill_questions),
                     "sampling": asdict(sampling),
                     "tokenizers": {"train": type(train_tok).__name__, "score_and_sample": type(tok).__name__,
                                    "examples_encoded_differently": {v: r["tokenizer_mismatches"] for v, r in runs.items()}}},
        "checks": {
            "step0_mean_score": runs["insecure"]["curve"]["mean_score"][0],
            "base_organism_mean_score": organism_scores["base"],
            "final_mean_score": runs["insecure"]["curve"]["mean_score"][-1],
            "insecure_organism_mean_score": organism_scores["misaligned"],
            **({"secure_final_mean_score": runs["secure"]["curve"]["mean_score"][-1],
                "secure_organism_mean_score": organism_scores["aligned"]} if "secure" in runs else {}),
        },
        "activations": paths,
        "model": specs,
    }
    return metrics
