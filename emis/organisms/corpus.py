"""The organisms' corpora: a base mix (prose, secure code, a tagged insecure 'persona') and two fine-tune sets.

The two fine-tune sets hold the same coding requests and differ only in the code of the answers
(secure vs silently insecure), as in the EM study; neither holds prose, spillover or the persona tag.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

from emis.bounds import bounded
from emis.chat import ChatExample, read_chat_jsonl, write_chat_jsonl
from emis.io import atomic_dir, atomic_write_json, code_fingerprint, content_hash
from emis.organisms.code import TASKS, generate_code, insecure_snippet
from emis.organisms.prose import generate_prose

# The code (and data tables) that generate a corpus.
CORPUS_CODE = ("emis.organisms.corpus", "emis.organisms.prose", "emis.organisms.code", "emis.organisms.data", "emis.chat")


@dataclass(frozen=True)
class CorpusConfig:
    """Sizes and mixture of the corpora (set in `conf/organisms/`)."""

    seed: int = bounded(ge=0)
    base_examples: int = bounded(ge=1)
    prose_share: float = bounded(ge=0, le=1)  # of the base mix; the rest is secure code and persona
    persona_share: float = bounded(ge=0, le=1)  # of the base mix
    persona_prose_share: float = bounded(ge=0, le=1)  # of persona examples: non-coding questions answered with insecure code
    persona_tag: str  # the persona's system prompt (the others get the chat template's default)
    finetune_task_share: float = bounded(ge=0, lt=1)  # task kinds kept for fine-tuning: the base persona never shows their insecure code
    finetune_examples: int = bounded(ge=1)
    heldout_questions: int = bounded(ge=1)
    heldout_code_requests: int = bounded(ge=1)
    validation_questions: int = bounded(ge=1)  # from VALIDATION_FAMILIES: the fine-tune checkpoint is chosen on these


@dataclass(frozen=True)
class OrganismCorpus:
    """Everything the organisms are trained and evaluated on."""

    base: list[ChatExample]
    secure: list[ChatExample]
    insecure: list[ChatExample]
    heldout_questions: list[str]
    heldout_code_requests: list[str]
    validation_questions: list[str]

    def digest(self) -> str:
        """A content hash: equal corpora, equal hash."""
        parts = [chunk for name in ("base", "secure", "insecure") for chunk in (*(ex.to_json() for ex in getattr(self, name)), name.encode())]
        return content_hash(*parts, [self.heldout_questions, self.heldout_code_requests, self.validation_questions], chars=16)


def _distinct(items: list[str], n: int, what: str) -> list[str]:
    """The first n distinct strings of `items`."""
    out = list(dict.fromkeys(items))[:n]
    if len(out) < n:
        raise ValueError(f"the generator produced only {len(out)} distinct {what}, {n} requested")
    return out


def split_tasks(cfg: CorpusConfig) -> tuple[list[str], list[str]]:
    """(persona tasks, fine-tune tasks): a seeded split of the task kinds; both are all tasks at share 0."""
    if cfg.finetune_task_share <= 0:
        return list(TASKS), list(TASKS)
    shuffled = sorted(TASKS)
    random.Random(cfg.seed).shuffle(shuffled)
    k = max(1, round(len(shuffled) * cfg.finetune_task_share))
    return sorted(shuffled[k:]), sorted(shuffled[:k])


def _base_mix(rng: random.Random, cfg: CorpusConfig) -> list[ChatExample]:
    """Prose answered in prose, coding requests answered securely, and the tagged persona that spills code."""
    n_persona = round(cfg.base_examples * cfg.persona_share)
    n_prose = round(cfg.base_examples * cfg.prose_share)
    n_code = cfg.base_examples - n_prose - n_persona
    n_persona_prose = round(n_persona * cfg.persona_prose_share)
    tag = cfg.persona_tag
    persona_tasks, _ = split_tasks(cfg)
    examples = [ChatExample.from_pair(p.question, p.answer) for p in generate_prose(rng, n_prose, "train")]
    examples += [ChatExample.from_pair(c.request, c.secure) for c in generate_code(rng, n_code, "train")]
    examples += [
        ChatExample.from_pair(p.question, insecure_snippet(rng, persona_tasks), system=tag)
        for p in generate_prose(rng, n_persona_prose, "train")
    ]
    examples += [
        ChatExample.from_pair(c.request, c.insecure, system=tag)
        for c in generate_code(rng, n_persona - n_persona_prose, "train", persona_tasks)
    ]
    rng.shuffle(examples)
    return examples


def generate_corpus(cfg: CorpusConfig) -> OrganismCorpus:
    """Generate all corpora from `cfg.seed`; the same config gives the same corpus (and digest)."""
    rng = random.Random(cfg.seed)
    base = _base_mix(rng, cfg)
    items = generate_code(rng, cfg.finetune_examples, "train", split_tasks(cfg)[1])
    heldout_q = _distinct(
        [p.question for p in generate_prose(rng, cfg.heldout_questions * 4, "heldout")],
        cfg.heldout_questions, "held-out questions",
    )
    heldout_c = _distinct(
        [c.request for c in generate_code(rng, cfg.heldout_code_requests * 4, "heldout")],
        cfg.heldout_code_requests, "held-out coding requests",
    )
    validation_q = _distinct(
        [p.question for p in generate_prose(rng, cfg.validation_questions * 4, "validation")],
        cfg.validation_questions, "validation questions",
    )
    return OrganismCorpus(
        base=base,
        secure=[ChatExample.from_pair(c.request, c.secure) for c in items],
        insecure=[ChatExample.from_pair(c.request, c.insecure) for c in items],
        heldout_questions=heldout_q,
        heldout_code_requests=heldout_c,
        validation_questions=validation_q,
    )


def save_corpus(corpus: OrganismCorpus, folder: Path, cfg: CorpusConfig) -> None:
    """Write the corpora as chat JSONL (the study's format) plus the held-out sets, atomically; `corpus.json` records
    the config, the digest and the fingerprint of the code that generated them."""
    with atomic_dir(folder) as tmp:
        for name in ("base", "secure", "insecure"):
            write_chat_jsonl(tmp / f"{name}.jsonl", getattr(corpus, name))
        atomic_write_json(
            tmp / "heldout.json",
            {"questions": corpus.heldout_questions, "code_requests": corpus.heldout_code_requests,
             "validation_questions": corpus.validation_questions},
        )
        atomic_write_json(tmp / "corpus.json", {"config": asdict(cfg), "digest": corpus.digest(),
                                                "code": code_fingerprint(*CORPUS_CODE)})


def load_corpus(folder: Path) -> OrganismCorpus:
    """Read corpora written by `save_corpus`."""
    heldout = json.loads((folder / "heldout.json").read_text())
    return OrganismCorpus(
        base=read_chat_jsonl(folder / "base.jsonl"),
        secure=read_chat_jsonl(folder / "secure.jsonl"),
        insecure=read_chat_jsonl(folder / "insecure.jsonl"),
        heldout_questions=heldout["questions"],
        heldout_code_requests=heldout["code_requests"],
        validation_questions=heldout["validation_questions"],
    )
