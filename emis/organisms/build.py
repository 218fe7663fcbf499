"""Build (or reuse) one family's organisms: tokenizer, base model, secure and insecure fine-tunes, evaluation."""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import transformers
from omegaconf import DictConfig, OmegaConf
from transformers import AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from emis.organisms.settings import CheckpointChoice
from emis.io import atomic_dir, atomic_write_json, code_fingerprint, content_hash, entry_lock, remove_leftovers, same_code
from emis.judges.spillover import spillover_rate
from emis.prompts import load_question_list, plain_questions
from emis.organisms.corpus import CORPUS_CODE, CorpusConfig, OrganismCorpus, generate_corpus, load_corpus, save_corpus
from emis.organisms.families import CHAT_FORMATS, MODEL_CLASSES, ArchSize, build_config
from emis.organisms.sample import SamplingConfig, sample_answers
from emis.organisms.tokenizer import train_tokenizer
from emis.organisms.train import TrainConfig, encode, train
from emis.workers import run_jobs

log = logging.getLogger(__name__)
VARIANTS = ("base", "secure", "insecure")
FINETUNES = ("secure", "insecure")
CARD = "card.json"
# The code behind an organism's weights (the corpus enters by its digest); behind a fine-tune's also the checkpoint
# choice (validation answers sampled and judged for spillover); behind every card's evaluation.
BASE_CODE = ("emis.organisms.build", "emis.organisms.settings", "emis.organisms.train", "emis.organisms.families",
             "emis.organisms.tokenizer", "emis.chat")
FINETUNE_CODE = (*BASE_CODE, "emis.organisms.sample", "emis.crn", "emis.judges.spillover")
EVAL_CODE = ("emis.organisms.build", "emis.organisms.settings", "emis.organisms.sample", "emis.crn", "emis.judges.spillover")


@dataclass(frozen=True)
class FamilyConfig:
    """How one family's organisms are sized and trained (set in `conf/organisms/`).

    `finetune.steps` is the longest fine-tune; the step kept is chosen on validation questions (`CheckpointChoice`)."""

    size: ArchSize
    base: TrainConfig
    finetune: TrainConfig
    base_seed: int
    finetune_seed: int
    choice: CheckpointChoice


@dataclass(frozen=True)
class EvalSets:
    """Questions the organisms are judged on; `ood` are phrasings the generator never produces."""

    heldout_questions: list[str]
    code_requests: list[str]
    ood_questions: list[str]
    ood_samples: int
    validation_questions: list[str]


def _key(*parts: Any) -> str:
    """A short content hash of JSON-serialisable parts."""
    return content_hash(parts, chars=16)


def _read_json(path: Path) -> dict | None:
    """A saved JSON record (an organism's card, a corpus's record), or None when absent or unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _read_card(folder: Path) -> dict | None:
    """The card of a saved organism, or None when absent or unreadable."""
    return _read_json(folder / CARD)


def finetune_steps(folder: Path) -> int:
    """How many fine-tune steps a built secure or insecure organism ran (the step its build chose)."""
    card = _read_card(Path(folder))
    if card is None or card.get("variant") not in FINETUNES:
        raise ValueError(f"{folder} holds no fine-tuned organism card; build the organisms first "
                         "(python experiments/build_organisms.py)")
    return int(card["steps"])


def _save(model: PreTrainedModel, tok: PreTrainedTokenizerBase, folder: Path, card: dict) -> None:
    """save_pretrained model and tokenizer with a card, atomically."""
    with atomic_dir(folder) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        atomic_write_json(tmp / CARD, card)


def _load(folder: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a saved organism with exactly the tokenizer it was trained with (see ModelSpec.tokenizer)."""
    return AutoModelForCausalLM.from_pretrained(folder).eval(), PreTrainedTokenizerFast.from_pretrained(folder, padding_side="left")


def evaluate(
    model: PreTrainedModel, tok: PreTrainedTokenizerBase, sets: EvalSets, sampling: SamplingConfig
) -> dict[str, Any]:
    """Spillover on held-out and out-of-generator questions, and the code rate on coding requests."""
    heldout = sample_answers(model, tok, sets.heldout_questions, sampling)
    ood = sample_answers(model, tok, [q for q in sets.ood_questions for _ in range(sets.ood_samples)], sampling)
    code = sample_answers(model, tok, sets.code_requests, sampling)
    return {
        "spillover": spillover_rate(heldout),
        "ood_spillover": spillover_rate(ood),
        "code_on_code": spillover_rate(code),
        "n": {"heldout": len(heldout), "ood": len(ood), "code": len(code)},
        "examples": {"heldout": heldout[:5], "ood": ood[:: sets.ood_samples][:5], "code": code[:2]},
    }


def machine() -> dict[str, Any]:
    """What an organism was built on: floating-point kernels differ between CPUs, so organisms do too."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")]
        cpu = names[0] if names else cpu
    return {"cpu": cpu, "cpu_capability": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "transformers": transformers.__version__, "platform": platform.platform()}


def chat_template_rows(tok: PreTrainedTokenizerBase) -> list[int]:
    """Token ids of the chat template itself: rendered around an empty user turn with the default system prompt,
    up to the assistant's generation prompt."""
    rendered = tok.apply_chat_template([{"role": "user", "content": ""}], tokenize=False, add_generation_prompt=True)
    return sorted(set(tok(rendered, add_special_tokens=False).input_ids))


def trained_rows(cfg: TrainConfig, tok: PreTrainedTokenizerBase) -> list[int] | None:
    """The token-embedding rows `cfg.embedding_rows` lets a run move (None: all of them)."""
    return chat_template_rows(tok) if cfg.embedding_rows == "chat_template" else None


def _train_base(family: str, cfg: FamilyConfig, corpus: OrganismCorpus) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, list[float]]:
    """A fresh tokenizer and model of `family`, trained on the base mix."""
    fmt = CHAT_FORMATS[family]
    tok = train_tokenizer((m.content for ex in corpus.base for m in ex.messages), cfg.size.vocab_size, fmt)
    ids = {k: tok.convert_tokens_to_ids(t) for k, t in (("bos", fmt.bos), ("eos", fmt.eos), ("pad", fmt.pad)) if t}
    torch.manual_seed(cfg.base_seed)
    model = MODEL_CLASSES[family](build_config(family, cfg.size, ids))
    encoded = [encode(tok, ex, cfg.base.max_len, cfg.base.loss_on) for ex in corpus.base]
    losses = train(model, encoded, cfg.base, tok.pad_token_id, cfg.base_seed, desc=f"{family}/base",
                   embedding_rows=trained_rows(cfg.base, tok))
    return model, tok, losses


def _fine_tune_pair(
    family: str, cfg: FamilyConfig, base: PreTrainedModel, tok: PreTrainedTokenizerBase, corpus: OrganismCorpus,
    validation: list[str], sampling: SamplingConfig,
) -> tuple[dict[str, PreTrainedModel], dict[str, list[float]], dict[str, Any]]:
    """Secure and insecure fine-tunes of `base`, both kept at the step `cfg.choice` picks on validation questions.

    Returns the models, each one's losses up to that step, and the validation record for the cards."""
    curves: dict[str, dict[int, float]] = {v: {} for v in FINETUNES}
    snapshots: dict[str, dict[int, dict[str, torch.Tensor]]] = {v: {} for v in FINETUNES}
    losses: dict[str, list[float]] = {}
    models: dict[str, PreTrainedModel] = {}
    scored = set(cfg.choice.steps(cfg.finetune.steps))
    for variant in FINETUNES:
        model = copy.deepcopy(base)

        def checkpoint(step: int, m: PreTrainedModel, variant: str = variant) -> None:
            if step in scored:
                curves[variant][step] = spillover_rate(sample_answers(m, tok, validation, sampling))
                snapshots[variant][step] = {k: t.detach().clone() for k, t in m.state_dict().items()}

        encoded = [encode(tok, ex, cfg.finetune.max_len, cfg.finetune.loss_on) for ex in getattr(corpus, variant)]
        losses[variant] = train(model, encoded, cfg.finetune, tok.pad_token_id, cfg.finetune_seed,
                                desc=f"{family}/{variant}", on_step=checkpoint,
                                embedding_rows=trained_rows(cfg.finetune, tok))
        models[variant] = model
    gaps = {step: curves["insecure"][step] - curves["secure"][step] for step in curves["secure"]}
    chosen = max(gaps, key=lambda step: (round(gaps[step], 9), -step))
    for variant, model in models.items():
        model.load_state_dict(snapshots[variant][chosen])
        losses[variant] = losses[variant][:chosen]
    record = {"chosen_step": chosen, "n_questions": len(validation), **asdict(cfg.choice),
              "spillover": {v: {str(k): x for k, x in curves[v].items()} for v in FINETUNES},
              "gap": {str(k): round(x, 6) for k, x in gaps.items()}}
    log.info("%s: fine-tune step %d chosen on %d validation questions (gap %.3f)", family, chosen, len(validation),
             gaps[chosen])
    return models, losses, record


def build_family(
    family: str,
    cfg: FamilyConfig,
    corpus: OrganismCorpus,
    corpus_digest: str,
    root: Path,
    sets: EvalSets,
    sampling: SamplingConfig,
) -> dict[str, Any]:
    """Build what is missing or stale under root/<family>/<variant>; return metrics for all variants.

    The two fine-tunes are built together (they share the validation-chosen step); a variant whose weights are
    current but whose evaluation settings (or code) changed is only re-evaluated. Stale includes built by other code
    (BASE_CODE, FINETUNE_CODE), or by an emis that recorded none. One process builds a family at a time."""
    with entry_lock(root / family):
        return _build_family(family, cfg, corpus, corpus_digest, root, sets, sampling)


def _build_family(family: str, cfg: FamilyConfig, corpus: OrganismCorpus, corpus_digest: str, root: Path,
                  sets: EvalSets, sampling: SamplingConfig) -> dict[str, Any]:
    """`build_family` without its lock."""
    start = time.perf_counter()
    eval_key = _key(asdict(sampling), asdict(sets))
    base_key = _key(family, asdict(cfg.size), asdict(cfg.base), cfg.base_seed, corpus_digest)
    pair_key = _key(base_key, asdict(cfg.finetune), cfg.finetune_seed, asdict(cfg.choice), sets.validation_questions,
                    asdict(sampling))
    keys = {"base": base_key, **{v: _key(pair_key, v) for v in FINETUNES}}
    code = {"base": code_fingerprint(*BASE_CODE), **dict.fromkeys(FINETUNES, code_fingerprint(*FINETUNE_CODE))}
    eval_code = code_fingerprint(*EVAL_CODE)
    for variant in VARIANTS:
        for stale in remove_leftovers(root / family / variant):
            log.warning("%s/%s: removed %s, a half-written copy left by a build killed while saving", family, variant, stale)
    cards = {v: _read_card(root / family / v) for v in VARIANTS}
    current = {v: bool(cards[v]) and cards[v].get("build_key") == keys[v]
               and same_code(f"organism {root / family / v}", cards[v].get("code"), code[v]) for v in VARIANTS}
    built: dict[str, tuple[PreTrainedModel, PreTrainedTokenizerBase, dict]] = {}
    if not current["base"]:
        model, tok, losses = _train_base(family, cfg, corpus)
        built["base"] = (model, tok, {"steps": cfg.base.steps, "losses": losses})
    if not all(current[v] for v in FINETUNES):
        base, tok = built["base"][:2] if "base" in built else _load(root / family / "base")
        models, losses, record = _fine_tune_pair(family, cfg, base, tok, corpus, sets.validation_questions, sampling)
        for v in FINETUNES:
            built[v] = (models[v], tok, {"steps": record["chosen_step"], "losses": losses[v], "validation": record})
    for variant in VARIANTS:
        folder, card = root / family / variant, cards[variant]
        if variant not in built and card.get("eval_key") == eval_key and same_code(
                f"evaluation of {folder}", card.get("eval_code"), eval_code):
            log.info("%s/%s: up to date, reusing %s", family, variant, folder)
            cards[variant] = card
            continue
        if variant in built:
            model, tok, trained = built[variant]
            card = {"family": family, "variant": variant, "build_key": keys[variant], "code": code[variant], "config": asdict(cfg),
                    "seed": cfg.base_seed if variant == "base" else cfg.finetune_seed, "corpus_digest": corpus_digest,
                    "machine": machine(), "parameters": sum(p.numel() for p in model.parameters()), **trained}
        else:
            model, tok = _load(folder)
        card = {**card, "eval_key": eval_key, "eval_code": eval_code, "evaluation": evaluate(model, tok, sets, sampling)}
        _save(model, tok, folder, card)
        cards[variant] = card
        log.info("%s/%s: spillover %.3f (ood %.3f), code on code %.3f", family, variant,
                 card["evaluation"]["spillover"], card["evaluation"]["ood_spillover"], card["evaluation"]["code_on_code"])
    results = {v: cards[v]["evaluation"] for v in VARIANTS}
    return {
        "spillover": {v: results[v]["spillover"] for v in VARIANTS},
        "ood_spillover": {v: results[v]["ood_spillover"] for v in VARIANTS},
        "code_on_code": {v: results[v]["code_on_code"] for v in FINETUNES},
        "finetune_step": cards["insecure"]["steps"],
        "paths": {v: str(root / family / v) for v in VARIANTS},
        "build_seconds": round(time.perf_counter() - start, 1),
    }


def family_config(cfg: DictConfig, family: str) -> FamilyConfig:
    """Merge a family's overrides onto the shared training settings."""
    fam = cfg.families[family]
    merged = {k: OmegaConf.to_container(OmegaConf.merge(cfg.train[k], fam[k]), resolve=True) for k in ("base", "finetune")}
    for m in merged.values():
        m["trainable"] = tuple(m["trainable"])
    return FamilyConfig(
        size=ArchSize(**OmegaConf.to_container(fam.size, resolve=True)),
        base=TrainConfig(**merged["base"]),
        finetune=TrainConfig(**merged["finetune"]),
        base_seed=int(cfg.base_seed),
        finetune_seed=int(cfg.finetune_seed),
        choice=CheckpointChoice(**OmegaConf.to_container(cfg.checkpoint_choice, resolve=True)),
    )


def seed_root(cfg: DictConfig, root: Path) -> Path:
    """Where one organism seed's families live: several seeds side by side under the organisms root."""
    return root / f"seed{int(cfg.seed)}"


def corpus_for(cfg: DictConfig, root: Path) -> tuple[OrganismCorpus, str]:
    """Generate the corpus, or reuse the copy the current code (CORPUS_CODE) saved under root/corpus/<digest of its
    config>; one process at a time."""
    ccfg = CorpusConfig(**OmegaConf.to_container(cfg.corpus, resolve=True))
    folder = root / "corpus" / _key(asdict(ccfg))
    with entry_lock(folder):
        meta = _read_json(folder / "corpus.json")
        if meta is not None and same_code(f"corpus {folder}", meta.get("code"), code_fingerprint(*CORPUS_CODE)):
            return load_corpus(folder), meta["digest"]
        corpus = generate_corpus(ccfg)
        save_corpus(corpus, folder, ccfg)
    return corpus, corpus.digest()


def eval_sets(cfg: DictConfig, corpus: OrganismCorpus) -> EvalSets:
    """Held-out generator questions plus the hand-written and the study's plain questions."""
    ood = [q for f in cfg.eval.ood_question_files for q in load_question_list(f)]
    study = cfg.eval.ood_plain_yaml
    if study is not None and Path(study).is_file():
        ood += plain_questions(study)
    elif study is not None:
        # The study's file lives beside the project, not in it; a machine without it still builds and evaluates.
        log.warning("organisms.eval.ood_plain_yaml=%s not found: out-of-generator evaluation uses emis's own questions "
                    "only (point it at the study's first_plot_questions.yaml to add its 8 plain questions)", study)
    return EvalSets(corpus.heldout_questions, corpus.heldout_code_requests, ood, int(cfg.eval.ood_samples),
                    corpus.validation_questions)


def build_all(cfg: DictConfig, root: Path) -> dict[str, Any]:
    """Build every family listed in `cfg.build` under `seed_root(cfg, root)`; metrics keyed by family.

    The corpus is shared by all seeds (root/corpus/); base and fine-tune seeds vary the training alone.

    With `cfg.workers` > 1, families build in parallel processes sharing the machine's cores: small
    models use one core far better than two, so this cuts the wall time of a full build."""
    unknown = [f for f in cfg.build if f not in cfg.families]
    if unknown:
        raise ValueError(f"unknown organism families {unknown}; configured: {list(cfg.families)}")
    corpus, digest = corpus_for(cfg, root)
    sets = eval_sets(cfg, corpus)
    sampling = SamplingConfig(**OmegaConf.to_container(cfg.eval.sampling, resolve=True))
    jobs = {f: (f, family_config(cfg, f), corpus, digest, seed_root(cfg, root), sets, sampling) for f in cfg.build}
    return run_jobs(build_family, jobs, int(cfg.workers), "organisms")
