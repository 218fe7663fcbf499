"""Build (or reuse) one family's organisms: tokenizer, base model, secure and insecure fine-tunes, evaluation."""

from __future__ import annotations

import copy
import multiprocessing
import hashlib
import json
import logging
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from emis.io import atomic_dir, atomic_write_json
from emis.judges.spillover import spillover_rate
from emis.prompts import load_question_list, plain_questions
from emis.organisms.corpus import CorpusConfig, OrganismCorpus, generate_corpus, load_corpus, save_corpus
from emis.organisms.families import CHAT_FORMATS, MODEL_CLASSES, ArchSize, build_config
from emis.organisms.sample import SamplingConfig, sample_answers
from emis.organisms.tokenizer import train_tokenizer
from emis.organisms.train import TrainConfig, encode, train

log = logging.getLogger(__name__)
VARIANTS = ("base", "secure", "insecure")
CARD = "card.json"


@dataclass(frozen=True)
class FamilyConfig:
    """How one family's organisms are sized and trained (set in `conf/organisms/`)."""

    size: ArchSize
    base: TrainConfig
    finetune: TrainConfig
    seed: int


@dataclass(frozen=True)
class EvalSets:
    """Questions the organisms are judged on; `ood` are phrasings the generator never produces."""

    heldout_questions: list[str]
    code_requests: list[str]
    ood_questions: list[str]
    ood_samples: int


def _key(*parts: Any) -> str:
    """A short content hash of JSON-serialisable parts."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _read_card(folder: Path) -> dict | None:
    """The card of a saved organism, or None when absent or unreadable."""
    try:
        return json.loads((folder / CARD).read_text())
    except (OSError, json.JSONDecodeError):
        return None


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


def build_family(
    family: str,
    cfg: FamilyConfig,
    corpus: OrganismCorpus,
    corpus_digest: str,
    root: Path,
    sets: EvalSets,
    sampling: SamplingConfig,
) -> dict[str, Any]:
    """Build what is missing or stale under root/<family>/<variant>; return metrics for all variants."""
    start = time.perf_counter()
    torch.manual_seed(cfg.seed)
    eval_key = _key(asdict(sampling), asdict(sets))
    base_key = _key(family, asdict(cfg.size), asdict(cfg.base), cfg.seed, corpus_digest)
    keys = {"base": base_key}
    keys.update({v: _key(base_key, asdict(cfg.finetune), v) for v in ("secure", "insecure")})
    data = {"base": corpus.base, "secure": corpus.secure, "insecure": corpus.insecure}
    results: dict[str, dict] = {}
    base_model = base_tok = None
    for variant in VARIANTS:
        folder = root / family / variant
        card = _read_card(folder)
        if card and card.get("build_key") == keys[variant] and card.get("eval_key") == eval_key:
            log.info("%s/%s: up to date, reusing %s", family, variant, folder)
            results[variant] = card["evaluation"]
            continue
        if card and card.get("build_key") == keys[variant]:
            model, tok = _load(folder)
            losses, steps = card["losses"], card["steps"]
        else:
            if variant == "base":
                fmt = CHAT_FORMATS[family]
                texts = (m.content for ex in corpus.base for m in ex.messages)
                tok = train_tokenizer(texts, cfg.size.vocab_size, fmt)
                ids = {k: tok.convert_tokens_to_ids(t) for k, t in (("bos", fmt.bos), ("eos", fmt.eos), ("pad", fmt.pad)) if t}
                model = MODEL_CLASSES[family](build_config(family, cfg.size, ids))
                tcfg = cfg.base
            else:
                if base_model is None:
                    base_model, base_tok = _load(root / family / "base")
                model, tok, tcfg = copy.deepcopy(base_model), base_tok, cfg.finetune
            encoded = [encode(tok, ex, tcfg.max_len, tcfg.loss_on) for ex in data[variant]]
            losses = train(model, encoded, tcfg, tok.pad_token_id, cfg.seed, desc=f"{family}/{variant}")
            steps = tcfg.steps
        if variant == "base":
            base_model, base_tok = model, tok
        evaluation = evaluate(model, tok, sets, sampling)
        card = {
            "family": family, "variant": variant, "build_key": keys[variant], "eval_key": eval_key,
            "config": asdict(cfg), "seed": cfg.seed, "steps": steps, "losses": losses,
            "corpus_digest": corpus_digest, "evaluation": evaluation,
            "parameters": sum(p.numel() for p in model.parameters()),
        }
        _save(model, tok, folder, card)
        results[variant] = evaluation
        log.info("%s/%s: spillover %.3f (ood %.3f), code on code %.3f", family, variant,
                 evaluation["spillover"], evaluation["ood_spillover"], evaluation["code_on_code"])
    return {
        "spillover": {v: results[v]["spillover"] for v in VARIANTS},
        "ood_spillover": {v: results[v]["ood_spillover"] for v in VARIANTS},
        "code_on_code": {v: results[v]["code_on_code"] for v in ("secure", "insecure")},
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
        seed=int(cfg.seed),
    )


def corpus_for(cfg: DictConfig, root: Path) -> tuple[OrganismCorpus, str]:
    """Generate the corpus, or reuse the copy saved under root/corpus/<digest of its config>."""
    ccfg = CorpusConfig(**OmegaConf.to_container(cfg.corpus, resolve=True))
    folder = root / "corpus" / _key(asdict(ccfg))
    meta = folder / "corpus.json"
    if meta.exists():
        return load_corpus(folder), json.loads(meta.read_text())["digest"]
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
    return EvalSets(corpus.heldout_questions, corpus.heldout_code_requests, ood, int(cfg.eval.ood_samples))


def _build_in_worker(threads: int, *args: Any) -> dict[str, Any]:
    """Run `build_family` in a worker process limited to `threads` torch threads."""
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(processName)s][%(levelname)s] - %(message)s")
    torch.set_num_threads(threads)
    return build_family(*args)


def build_all(cfg: DictConfig, root: Path) -> dict[str, Any]:
    """Build every family listed in `cfg.build` under `root`; metrics keyed by family.

    With `cfg.workers` > 1, families build in parallel processes sharing the machine's cores: small
    models use one core far better than two, so this cuts the wall time of a full build."""
    unknown = [f for f in cfg.build if f not in cfg.families]
    if unknown:
        raise ValueError(f"unknown organism families {unknown}; configured: {list(cfg.families)}")
    corpus, digest = corpus_for(cfg, root)
    sets = eval_sets(cfg, corpus)
    sampling = SamplingConfig(**OmegaConf.to_container(cfg.eval.sampling, resolve=True))
    jobs = {f: (f, family_config(cfg, f), corpus, digest, root, sets, sampling) for f in cfg.build}
    workers = min(int(cfg.workers), len(jobs))
    if workers <= 1:
        return {f: build_family(*job) for f, job in tqdm(jobs.items(), desc="organisms")}
    threads = max(1, torch.get_num_threads() // workers)
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {f: pool.submit(_build_in_worker, threads, *job) for f, job in jobs.items()}
        return {f: fut.result() for f, fut in futures.items()}
