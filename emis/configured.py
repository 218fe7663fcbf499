"""Library objects from the composed config (`conf/`): model specs, questions, captures, the evaluation set and
its sampling, coherence scorers and caches. What every stage and the API build from settings lives here once."""

from __future__ import annotations

import logging
import random
from dataclasses import fields
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf
from transformers import PreTrainedTokenizerBase

from emis.activations import ActivationSet, capture_cached
from emis.directions import ControlConfig
from emis.evaluation import EvalSet, SteeringTarget, templated
from emis.models import LoadedModel, ModelSpec, load_model
from emis.monitor import MonitorConfig
from emis.organisms.build import corpus_for
from emis.organisms.prose import generate_prose
from emis.organisms.sample import SamplingConfig, chat_prompt
from emis.prompts import ORGANISM_SOURCES, EvalQuestion, drawn, load_question_yaml, source_questions
from emis.question_files import fetch_question_file
from emis.sweep import SCORERS, CoherenceRule, checked_scorer

log = logging.getLogger(__name__)


def generation_cache(cfg: DictConfig) -> Path:
    """Where steered generations are cached (by content), shared by every experiment."""
    return Path(cfg.paths.outputs) / "cache" / "generations"


def load_scorer(model_cfg: DictConfig, role: str, model: LoadedModel) -> LoadedModel:
    """The model whose surprise measures offline coherence (`steer.coherence_scorer`), checked to share `model`'s
    tokenizer, since it scores the generated token ids themselves."""
    if role not in SCORERS:
        raise ValueError(f"steer.coherence_scorer must be one of {SCORERS}, got {role!r}")
    return checked_scorer(role, model if role == "misaligned" else load_model(model_spec(model_cfg, role)), model)


def coherence_rule(s: DictConfig) -> CoherenceRule:
    """The α rule of the `steer` config (its tolerance, and the interval's level, resamples and seed)."""
    return CoherenceRule(float(s.coherence_tolerance), float(s.ci_level), int(s.n_bootstrap), int(s.bootstrap_seed))


def control_config(controls: DictConfig) -> ControlConfig:
    """The `controls` group as its dataclass (the group's structured-config schema)."""
    return OmegaConf.to_object(controls) if OmegaConf.is_config(controls) else controls


ROLES = ("misaligned", "aligned", "base")
NO_BASE = "no base model (model.base: null): the aligned-vs-base control is not measured"
SHARED_SETTINGS = ("remote", "dtype", "device", "tokenizer", "traces_per_session")  # a role entry may override each


def pair_roles(model_cfg: DictConfig) -> tuple[str, ...]:
    """The roles a model-pair config holds: misaligned and aligned always, base unless it is null."""
    for role in ("misaligned", "aligned"):
        if model_cfg.get(role) is None:
            raise ValueError(f"the model config {model_cfg.get('family')!r} has no {role} model; a pair needs "
                             "model.misaligned and model.aligned (model.base may be null)")
    return tuple(r for r in ROLES if model_cfg.get(r) is not None)


def _expand(name: str) -> str:
    """A local path with `~` expanded; a hub id unchanged."""
    path = Path(name).expanduser()
    return str(path) if path.exists() else name


def model_spec(model_cfg: DictConfig, role: str) -> ModelSpec:
    """The ModelSpec of one role (misaligned | aligned | base) of a model-pair config: the role's name, adapter and
    revisions, and the pair's shared settings unless the role overrides them."""
    if role not in pair_roles(model_cfg):
        raise ValueError(f"the model config {model_cfg.get('family')!r} has no {role} model (model.{role}: null); "
                         f"give one, or use what needs no {role} model")
    entry = model_cfg[role]
    shared = {key: entry[key] if entry.get(key) is not None else model_cfg[key] for key in SHARED_SETTINGS}
    return ModelSpec(name=_expand(str(entry.name)), adapter=entry.get("adapter"), revision=entry.get("revision"),
                     adapter_revision=entry.get("adapter_revision"), **{**shared, "traces_per_session": int(shared["traces_per_session"])})


def organism_questions(cfg: DictConfig, source: str, n: int, seed: int, n_key: str) -> list[str]:
    """n non-coding questions from held-out template families (the organisms' corpus is built or read for them).

    organism_heldout: the organisms' evaluation questions (spillover is measured on them), the first n;
    organism_probe: fresh, seeded questions from the same held-out families, disjoint from the evaluation ones,
    so directions and maps are never fitted on the questions they are judged on."""
    corpus, _ = corpus_for(cfg.organisms, Path(cfg.paths.organisms).expanduser())
    evaluation = corpus.heldout_questions
    if source == "organism_heldout":
        if n > len(evaluation):
            raise ValueError(f"{n_key}={n} questions asked, the organisms hold {len(evaluation)} evaluation questions")
        return evaluation[:n]
    taken = set(evaluation)
    items = generate_prose(random.Random(seed), 2 * n + len(taken), split="heldout")
    fresh = [q for q in dict.fromkeys(item.question for item in items) if q not in taken][:n]
    if len(fresh) < n:
        raise ValueError(f"only {len(fresh)} distinct probe questions could be drawn, {n} asked ({n_key})")
    return fresh


def load_prompts(cfg: DictConfig, source: str, n: int, seed: int, key: str, n_key: str) -> list[str]:
    """The n questions of `source`, the setting `key` (`n_key` gives n): an organism source (organism_questions),
    or every question of a .txt / study YAML / chat JSONL file or an `hf:` dataset (emis.prompts.source_questions),
    all in their order when n is their number, else a draw of n seeded by `seed` (emis.prompts.drawn). Only the
    organism sources build or read the organisms' corpus."""
    if n < 1:
        raise ValueError(f"{n_key}={n}: the prompt set is empty; ask for at least 1 question")
    if source in ORGANISM_SOURCES:
        return organism_questions(cfg, source, n, seed, n_key)
    return drawn(source_questions(source, key), n, seed, n_key)


def prompt_questions(cfg: DictConfig) -> list[str]:
    """The questions to capture on, from the configured source (`capture.prompts`)."""
    c = cfg.capture
    return load_prompts(cfg, str(c.prompts), int(c.n_prompts), int(c.prompt_seed), "capture.prompts", "capture.n_prompts")


def capture_role(cfg: DictConfig, model_cfg: DictConfig, role: str, questions: list[str], cache_dir: Path) -> tuple[ActivationSet, Path]:
    """Load one model of a pair and capture (or reuse) its residuals on the chat-templated questions."""
    model = load_model(model_spec(model_cfg, role))
    prompts = [chat_prompt(model.tokenizer, q) for q in questions]
    layers = cfg.capture.layers if isinstance(cfg.capture.layers, str) else list(cfg.capture.layers)
    return capture_cached(model, prompts, layers, cfg.capture.position, cache_dir, batch_size=int(cfg.capture.batch_size))


def role_activations(cfg: DictConfig, model_cfg: DictConfig) -> tuple[dict[str, ActivationSet], dict[str, str]]:
    """Captures of a pair's roles (base only when the pair has one) on the probe questions, reused from the cache,
    and their paths."""
    questions = prompt_questions(cfg)
    cache_dir = Path(cfg.paths.outputs) / "cache" / "activations"
    captured = {role: capture_role(cfg, model_cfg, role, questions, cache_dir) for role in pair_roles(model_cfg)}
    return {r: a for r, (a, _) in captured.items()}, {r: f"{p}.safetensors" for r, (_, p) in captured.items()}


def study_questions(cfg: DictConfig) -> list[EvalQuestion]:
    """Every entry of the configured question file (downloaded once into the cache when it is a URL)."""
    e = cfg.eval
    path = fetch_question_file(str(e.questions), Path(str(e.cache_dir)).expanduser(), e.sha256)
    return load_question_yaml(path)


def default_judge_prompts(cfg: DictConfig) -> dict[str, str]:
    """The judge prompts for questions that carry none (the organisms' own): those of `judge.prompts_from`."""
    source = cfg.judge.get("prompts_from")
    if source is None:
        return {}
    path = fetch_question_file(str(source), Path(str(cfg.eval.cache_dir)).expanduser())
    prompts = next((q.judge_prompts for q in load_question_yaml(path) if q.judge_prompts), None)
    if not prompts:
        raise ValueError(f"judge.prompts_from={source} holds no judge_prompts; point it at a study question file")
    return prompts


def evaluation_set(cfg: DictConfig, tok: PreTrainedTokenizerBase, n_prompts: int, n_key: str = "eval.n_prompts") -> EvalSet:
    """The configured evaluation questions, chat-templated for `tok`, one row per generation: `n_prompts` (the
    setting `n_key`) of `eval.prompts`, or every question of the study file `eval.questions` when one is set."""
    if cfg.eval.questions is None:
        e = cfg.eval
        questions = load_prompts(cfg, str(e.prompts), n_prompts, int(e.prompt_seed), "eval.prompts", n_key)
        samples = int(e.samples_per_prompt)
        prompts = [chat_prompt(tok, q) for q in questions for _ in range(samples)]
        judge = default_judge_prompts(cfg)
        unit = "organism" if e.prompts in ORGANISM_SOURCES else "question"
        return EvalSet(prompts, np.repeat(np.arange(len(questions)), samples), questions,
                       [f"{unit}_{i}" for i in range(len(questions))], [judge] * len(questions))
    override = cfg.eval.samples_per_paraphrase
    prompts, units, texts, ids, judges = [], [], [], [], []
    for q in study_questions(cfg):
        samples = int(override) if override is not None else q.samples_per_paraphrase
        for paraphrase in q.paraphrases:
            units += [len(texts)] * samples
            prompts += [templated(tok, paraphrase, q.system)] * samples
            texts.append(paraphrase)
            ids.append(q.id)
            judges.append(q.judge_prompts)
    log.info("evaluation: %d questions from %s, %d generations", len(texts), cfg.eval.questions, len(prompts))
    return EvalSet(prompts, np.array(units), texts, ids, judges)


def evaluation_sampling(cfg: DictConfig, max_new_tokens: int | None = None) -> SamplingConfig:
    """How evaluation answers are sampled (`eval.sampling`), with another answer length where a stage sets one."""
    values = OmegaConf.to_container(cfg.eval.sampling, resolve=True)
    if max_new_tokens is not None:
        values["max_new_tokens"] = max_new_tokens
    return SamplingConfig(**values)


def monitor_config(cfg: DictConfig) -> MonitorConfig:
    """The calibration keys of the `monitor` config group."""
    keys = {f.name for f in fields(MonitorConfig)}
    return MonitorConfig(**{k: v for k, v in OmegaConf.to_container(cfg, resolve=True).items() if k in keys})


def steering_target(cfg: DictConfig, model_cfg: DictConfig, n_key: str) -> tuple[SteeringTarget, dict[str, str]]:
    """A configured pair's misaligned model, its coherence scorer (`steer.coherence_scorer`), its roles' cached
    captures (and their paths) and as many evaluation questions as the setting `n_key` says: what the steer and
    transfer stages steer."""
    acts, paths = role_activations(cfg, model_cfg)
    model = load_model(model_spec(model_cfg, "misaligned"))
    scorer = load_scorer(model_cfg, str(cfg.steer.coherence_scorer), model)
    evals = evaluation_set(cfg, model.tokenizer, int(OmegaConf.select(cfg, n_key)), n_key)
    return SteeringTarget(model, scorer, acts, evals), paths
