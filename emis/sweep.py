"""A sweep of steerings as rows of batched generate calls: answers (cached by content), spill per question,
per-row coherence statistics and write norms; the coherence rule that says which α may be chosen, and the choice."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from emis.evaluation import EvalSet, judge_rows, judged_coherence
from emis.generation import SteeredGenerations, Steering, generate_steered
from emis.io import atomic_write_json, code_fingerprint, content_hash, entry_lock, same_code
from emis.judges.coherence import answer_surprise_sets, coherence_from_sums, coherence_terms, offline_coherence, repetition
from emis.judges.llm import JudgeError, LLMJudge
from emis.judges.spillover import contains_code
from emis.models import LoadedModel
from emis.organisms.sample import SamplingConfig
from emis.settings import SCORERS  # noqa: F401  (exported here too)
from emis.stats import cluster_bootstrap_ci

log = logging.getLogger(__name__)
# The code that computes a cached generation's numbers: the steered generate and its noise, how the model loads and is
# traced, the coherence scorer's surprise (with its padding), and `cached_generations` itself.
GENERATION_CODE = ("emis.sweep", "emis.generation", "emis.crn", "emis.models", "emis.judges.coherence", "emis.activations")


@dataclass
class RowStats:
    """Per generated row: excess surprise under the coherence scorer, repetition and whether it spills code."""

    surprise: np.ndarray
    repetition: np.ndarray
    spills: np.ndarray

    def take(self, rows: np.ndarray) -> "RowStats":
        return RowStats(self.surprise[rows], self.repetition[rows], self.spills[rows])

    def offline_coherence(self) -> float:
        """Offline coherence of these rows (`emis.judges.coherence`): a function of these answers alone."""
        return offline_coherence(self.surprise, self.repetition)


def coherence_shift_ci(steered: RowStats, unsteered: RowStats, clusters: list[str], level: float, n_resamples: int,
                       seed: int) -> tuple[float, float]:
    """Paired cluster-bootstrap interval of coherence(steered) - coherence(unsteered) over the same rows."""
    a, b = coherence_terms(steered.surprise, steered.repetition), coherence_terms(unsteered.surprise, unsteered.repetition)

    def shift(*sums: np.ndarray, axis: int = -1) -> np.ndarray:
        return coherence_from_sums(*sums[:4], axis=axis) - coherence_from_sums(*sums[4:], axis=axis)

    return cluster_bootstrap_ci((*a, *b), clusters, shift, level, n_resamples, seed)


@dataclass(frozen=True)
class CoherenceRule:
    """Which α may be chosen: offline, those whose paired interval of coherence minus unsteered coherence lies above
    -tolerance (non-inferiority: a loss larger than the tolerance is ruled out at `level`); judged, those whose
    mean judge score is within the tolerance of unsteered."""

    tolerance: float
    level: float
    n_resamples: int
    seed: int

    def admissible(self, steered: "SweepOutcome", k: int, unsteered: "SweepOutcome", k0: int, rows: np.ndarray,
                   clusters: list[str]) -> bool:
        if steered.judged is not None:
            before = unsteered.coherence(k0, rows)
            if np.isnan(before):
                raise JudgeError("no unsteered answer got a coherence score (the judge returned no numeric `coherent` "
                                 "score); check the judge model supports logprobs and scores 0-100")
            return steered.coherence(k, rows) >= before - self.tolerance
        lo, _ = coherence_shift_ci(steered.rows[k].take(rows), unsteered.rows[k0].take(rows), clusters, self.level,
                                   self.n_resamples, self.seed)
        return lo >= -self.tolerance


@dataclass
class SweepOutcome:
    """Per steering: spill rate per evaluation unit, per-row statistics and write norms, the answers (and their token
    ids) and (with a judge) their scores. Coherence is computed on any subset of rows (a split) by `coherence`."""

    spill: list[np.ndarray]
    rows: list[RowStats]
    write_norms: list[np.ndarray]
    answers: list[list[str]]
    tokens: list[list[list[int]]]
    judged: list[list[dict[str, Any]]] | None = None

    def coherence(self, k: int, rows: np.ndarray) -> float:
        """Steering k's coherence on `rows`: the judge's `coherent`/100 when judged, else offline."""
        if self.judged is not None:
            return judged_coherence([self.judged[k][i] for i in rows])
        return self.rows[k].take(rows).offline_coherence()

    def pick(self, ks: list[int]) -> "SweepOutcome":
        """The outcome of steerings `ks` only, in that order."""
        return SweepOutcome([self.spill[k] for k in ks], [self.rows[k] for k in ks], [self.write_norms[k] for k in ks],
                            [self.answers[k] for k in ks], [self.tokens[k] for k in ks],
                            None if self.judged is None else [self.judged[k] for k in ks])

    def subset(self, units: np.ndarray, rows: np.ndarray) -> "SweepOutcome":
        """Every steering's outcome on evaluation `units` (and their `rows`) only, as `EvalSet.subset` numbers them."""
        return SweepOutcome([x[units] for x in self.spill], [r.take(rows) for r in self.rows], [w[rows] for w in self.write_norms],
                            [[a[i] for i in rows] for a in self.answers], [[t[i] for i in rows] for t in self.tokens],
                            None if self.judged is None else [[j[i] for i in rows] for j in self.judged])

    def replaced(self, ks: list[int], other: "SweepOutcome") -> "SweepOutcome":
        """This outcome with steerings `ks` replaced by `other`'s, in order (unjudged outcomes only)."""
        if self.judged is not None or other.judged is not None:
            raise ValueError("judged sweep outcomes are not spliced")
        out = self.pick(list(range(len(self.spill))))
        for j, k in enumerate(ks):
            out.spill[k], out.rows[k], out.write_norms[k] = other.spill[j], other.rows[j], other.write_norms[j]
            out.answers[k], out.tokens[k] = other.answers[j], other.tokens[j]
        return out


def generation_key(model: LoadedModel, scorer: LoadedModel, prompts: list[str], steerings: list[Steering],
                   sampling: SamplingConfig) -> str:
    """sha256 of the inputs that determine a batched steered generation and its coherence scores (not the batch
    size: with common random numbers the answers do not depend on it; not the code: the entry stores that)."""
    noise = {k: v for k, v in asdict(sampling).items() if k != "batch_size"}
    chunks: list[Any] = [[*model.identity, *scorer.identity, prompts, noise]]
    for st in steerings:
        chunks += [[st.coefficient, st.mode, st.where, st.layers], *(st.vectors[l].float().contiguous().numpy().tobytes() for l in st.layers)]
    return content_hash(*chunks)


def cached_generations(model: LoadedModel, scorer: LoadedModel, prompts: list[str], steerings: list[Steering],
                       sampling: SamplingConfig, cache_dir: Path | None) -> tuple[SteeredGenerations, list[np.ndarray]]:
    """Steered answers and their excess surprise under the coherence `scorer`, reused from `cache_dir` when the
    current code computed them before (one process at a time per entry). Scores come in batches of a fixed size,
    not the sampling batch size, so they do not change with it."""
    if cache_dir is None:
        return _generate_and_score(model, scorer, prompts, steerings, sampling)
    path = Path(cache_dir) / f"{generation_key(model, scorer, prompts, steerings, sampling)}.json"
    code = code_fingerprint(*GENERATION_CODE)
    with entry_lock(path):
        if path.is_file():
            try:
                saved = json.loads(path.read_text())
                if same_code(f"generations cache {path}", saved.get("code"), code):
                    log.info("generations cache hit: %s", path)
                    gens = SteeredGenerations(saved["answers"], saved["tokens"], saved["write_norms"])
                    return gens, [np.array(x, float) for x in saved["surprise"]]
            except (json.JSONDecodeError, KeyError) as err:
                log.warning("ignoring unreadable generations cache %s (%s)", path, err)
        gens, surprise = _generate_and_score(model, scorer, prompts, steerings, sampling)
        atomic_write_json(path, {"code": code, "answers": gens.answers, "tokens": gens.tokens, "write_norms": gens.write_norms,
                                 "surprise": [[None if np.isnan(x) else float(x) for x in row] for row in surprise]})
    log.info("generations cached: %s", path)
    return gens, surprise


def _generate_and_score(model: LoadedModel, scorer: LoadedModel, prompts: list[str], steerings: list[Steering],
                        sampling: SamplingConfig) -> tuple[SteeredGenerations, list[np.ndarray]]:
    """Steered answers and each one's excess surprise under `scorer`: what `cached_generations` caches."""
    gens = generate_steered(model, prompts, steerings, sampling)
    return gens, answer_surprise_sets(scorer, prompts, gens.tokens)


def run_sweep(model: LoadedModel, scorer: LoadedModel, evals: EvalSet, steerings: list[Steering], sampling: SamplingConfig,
              cache_dir: Path | None = None, judge: LLMJudge | None = None) -> SweepOutcome:
    """Generate under every steering: spill per unit, per-row statistics (coherence under `scorer`) and write norms,
    judge scores when judged."""
    gens, surprise = cached_generations(model, scorer, evals.prompts, steerings, sampling, cache_dir)
    flags = [np.array([contains_code(a) for a in answers], bool) for answers in gens.answers]
    rows = [RowStats(x, np.array([repetition(t) for t in tokens], float), f) for x, tokens, f in zip(surprise, gens.tokens, flags)]
    judged = None
    if judge is not None:
        judged = [judge_rows(judge, evals, answers) for answers in tqdm(gens.answers, desc="judging", unit="steering")]
    return SweepOutcome([evals.unit_means(f) for f in flags], rows, [np.array(w, float) for w in gens.write_norms],
                        gens.answers, gens.tokens, judged)


def best_point(alphas: list[float], spill: dict[int, list[float]], admissible: dict[int, list[bool]]) -> tuple[int, int]:
    """(layer, α index) with the lowest spillover among the admissible points (`CoherenceRule`); α = 0 always is."""
    zero = alphas.index(0.0)
    allowed = [(layer, i) for layer, ok in admissible.items() for i in range(len(alphas)) if ok[i] or i == zero]
    return min(allowed, key=lambda p: (spill[p[0]][p[1]], abs(alphas[p[1]]), p[0]))


def checked_scorer(role: str, scorer: LoadedModel | None, model: LoadedModel) -> LoadedModel:
    """`scorer` (the pair's `role` model) if it exists and shares `model`'s tokenizer, else one clear error."""
    if scorer is None:
        raise ValueError(f"steer.coherence_scorer={role}, but the pair has no {role} model")
    if scorer is not model and scorer.tokenizer.get_vocab() != model.tokenizer.get_vocab():
        raise ValueError(f"steer.coherence_scorer={role}: its tokenizer differs from the misaligned model's, and offline "
                         "coherence scores the generated token ids; use a scorer with the same tokenizer (e.g. misaligned)")
    return scorer
